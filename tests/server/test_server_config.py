"""The server's config: parsing, errors that name the entry, the toy world's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulate.server.config import ConfigError, load_config, parse_config, world_config


def test_serve_command_reports_a_bad_config(tmp_path):
    from typer.testing import CliRunner

    from emulate.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"compositions: {{x: {{formula: 'a', terms: {{a: {tmp_path}}}}}}}\n")
    for args in (["--config", str(tmp_path / "missing.yaml")], ["--config", str(bad)]):
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2 and "error" in result.output


def test_world_config_serves_the_up_scaled_composition(micro_world):
    spec = world_config(micro_world).compositions["toy-eft"]
    assert spec.formula == "large_base + beta*(small_helpful - small_base)"
    assert {template for _, template in spec.terms.values()} == {"chat"}
    assert all(Path(path, "config.json").exists() for path, _ in spec.terms.values())


def test_config_errors_name_the_entry(tmp_path):
    with pytest.raises(ConfigError, match="compositions"):
        parse_config({"models": {}})
    with pytest.raises(ConfigError, match=r"compositions\.x\.formula"):
        parse_config({"compositions": {"x": {"terms": {"a": "p"}}}})
    with pytest.raises(ConfigError, match="server.max_batch"):
        parse_config({"compositions": {"x": {"formula": "a", "terms": {"a": "p"}}},
                      "server": {"max_batch": 0}})
    with pytest.raises(ConfigError, match="server.engine must be 'process' or 'thread'"):
        parse_config({"compositions": {"x": {"formula": "a", "terms": {"a": "p"}}},
                      "server": {"engine": "fiber"}})
    with pytest.raises(ConfigError, match="plausibility"):
        parse_config({"compositions": {"x": {"formula": "a", "terms": {"a": "p"},
                                             "defaults": {"plausibility": "b"}}}})
    for speculative, message in ((True, None), ({"draft": "b"}, "unknown term 'b'"),
                                 ({"k": 0}, "k must be"), ({"lean": True}, "only draft"),
                                 ({"lookup": "own"}, None), ({"lookup": "all"}, "lookup must be"),
                                 ("yes", "must be true")):
        entry = {"formula": "a", "terms": {"a": "p"}, "defaults": {"speculative": speculative}}
        if message is None:
            parse_config({"compositions": {"x": entry}})
            continue
        with pytest.raises(ConfigError, match=r"compositions\.x\.defaults\.speculative"):
            try:
                parse_config({"compositions": {"x": entry}})
            except ConfigError as error:
                assert message in str(error)
                raise
    toml = tmp_path / "c.toml"
    toml.write_text('[compositions.x]\nformula = "a"\nterms = {a = "some/path"}\n')
    assert load_config(toml).compositions["x"].terms == {"a": ("some/path", "plain")}


def test_the_example_config_parses():
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / "examples" / "llama2-upscale.yaml")
    eft = config.compositions["llama-2-70b-eft-chat"]
    assert eft.terms["large"] == ("meta-llama/Llama-2-70b-hf", "chat")  # a hub id, not a path
    assert config.compositions["llama-2-7b-disaligned"].parameters == {"alpha": 0.5}
    assert (config.server.device, config.server.dtype) == ("cuda:3", "bfloat16")
    assert config.placements["meta-llama/Llama-2-70b-hf"]["device_map"] == "balanced"
    assert config.placements["meta-llama/Llama-2-7b-hf"] == {"device": "cuda:3"}


def test_requests_override_the_configured_speculative_options_but_not_lookup():
    from emulate.server.protocol import CompletionRequest
    from emulate.server.translate import _speculative

    configured = {"k": 3, "lookup": "own"}

    def asked(speculative):
        emulate = None if speculative is None else {"speculative": speculative}
        return _speculative(CompletionRequest(model="x", prompt="a", emulate=emulate), configured)

    assert asked(None) == configured
    assert asked(True) == configured
    assert asked(False) is None
    assert asked({"k": 5, "draft": "b"}) == {"k": 5, "draft": "b", "lookup": "own"}
    with pytest.raises(ValueError, match="lookup"):  # the server's call, not a request's
        asked({"lookup": True})
    assert _speculative(CompletionRequest(model="x", prompt="a",
                                          emulate={"speculative": True}), None) is True
