"""The job pool run in this process: every job, and the jobs queued as others finish."""

from emulate.vision.workers import run_jobs


def square(x, report):
    report(("step", "square", x, None))
    return x * x


def test_follow_queues_jobs_and_every_result_comes_back():
    events = []
    jobs = {("square", 2): (square, (2,)), ("square", 3): (square, (3,))}

    def follow(name, result):
        return {("again", name[1]): (square, (result,))} if name[0] == "square" else {}

    results = run_jobs(jobs, events.append, workers=1, follow=follow)
    assert results == {("square", 2): 4, ("square", 3): 9, ("again", 2): 16, ("again", 3): 81}
    assert [e[2] for e in events] == [2, 3, 4, 9]
