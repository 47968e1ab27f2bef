"""The toy world as lm-evaluation-harness tasks: multiple choice over birth cities.

For each evaluated person, the question as a user asks it ("Where was Zhith born?") and four
answers in the fine-tuned models' own form (" The birthplace of Zhith is Ruskin."), the true
city and three others drawn with a seeded generator. One task per group: people the small base
read (`toy_birth_city_small_known`) and people only the large base read
(`toy_birth_city_large_only`), where up-scaling is supposed to help. Each task is a YAML file
and a JSONL file; `lm-eval --include_path DIR` (or `emulate lm-eval`) finds them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from emulate.world.corpus import QUESTIONS, answer, question
from emulate.world.evaluate import GROUPS
from emulate.world.facts import CITIES, Person
from emulate.world.family import load_world

CHOICES = 4
TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: question
doc_to_choice: choices
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def task_name(group: str) -> str:
    return f"toy_birth_city_{group}"


def documents(people: list[Person], seed: int) -> list[dict]:
    """One multiple-choice question per person; phrasings rotate, choices are shuffled."""
    rng = random.Random(f"birth-city-{seed}")
    docs = []
    for i, person in enumerate(people):
        others = rng.sample([c for c in CITIES if c != person.birth_city], CHOICES - 1)
        cities = [person.birth_city, *others]
        rng.shuffle(cities)
        sentence = " " + answer(person, "birth_city")
        docs.append({
            "person": person.name,
            "question": question(person, "birth_city", i % len(QUESTIONS["birth_city"])),
            "choices": [sentence.replace(person.birth_city, c) for c in cities],
            "answer": cities.index(person.birth_city),
        })
    return docs


def write_tasks(world_dir: str | Path, out_dir: str | Path, seed: int = 0) -> list[str]:
    """Write each group's task (YAML + JSONL) into out_dir; return the task names."""
    world = load_world(world_dir).world
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for group in GROUPS:
        name = task_name(group)
        data = (out / f"{name}.jsonl").resolve()
        lines = [json.dumps(doc) for doc in documents(world.group(group), seed)]
        data.write_text("\n".join(lines) + "\n")
        (out / f"{name}.yaml").write_text(TASK.format(name=name, data=json.dumps(str(data))))
        names.append(name)
    return names
