"""Config validation: every refusal names the offending key, and no secret value ever leaks."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BASE_CONFIG, TEST_ENV

from hooklane.shared import config as cfg_mod
from hooklane.shared.config import Config, ConfigError, Secret

VR = """
[[sources]]
name = "vr"
provider = "volumereach"
secrets = ["env:VR_SECRET"]
"""


def load(text: str, **env: str) -> Config:
    return cfg_mod.loads(textwrap.dedent(text), env={**TEST_ENV, **env})


def refused(text: str, **env: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(text, **env)
    return str(err.value)


# --------------------------------------------------------------------------- the happy path


def test_base_config_loads_one_source_per_provider(config: Config) -> None:
    assert {s.provider for s in config.sources.values()} == {
        "volumereach", "voxpria", "volubile", "voipbin", "voicekit",
    }
    vr = config.sources["vr"]
    assert [s.reveal() for s in vr.secrets] == [b"vr-secret-current", b"vr-secret-previous"]
    assert [t.reveal() for t in config.sources["vb"].tokens] == [b"vb-url-token-123"]
    assert config.sources["vk"].allow_ips == (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"),
    )
    assert config.handlers["log"].type == "log"
    assert config.routes[0].events == ("*",)


def test_defaults_when_tables_are_absent() -> None:
    c = load(VR)
    assert c.redis.url == "redis://127.0.0.1:6379/0"
    assert c.ingest.max_body_bytes == 1024 * 1024
    assert c.ingest.trusted_proxies == 0
    assert c.ingest.request_read_timeout_seconds == 10.0
    assert c.ingest.max_buffered_bytes == 64 * 1024 * 1024
    assert c.sources["vr"].tolerance_seconds == 300
    assert c.sources["vr"].methods == ()


def test_request_read_timeout_takes_fractions_of_a_second() -> None:
    assert load("[ingest]\nrequest_read_timeout_seconds = 2.5\n" + VR).ingest.request_read_timeout_seconds == 2.5


def test_token_accepts_a_single_string_or_a_rotation_list() -> None:
    c = load("""
        [[sources]]
        name = "vb"
        provider = "voipbin"
        token = ["env:VOIPBIN_TOKEN", "env:VOICEKIT_TOKEN"]
    """)
    assert [t.reveal() for t in c.sources["vb"].tokens] == [b"vb-url-token-123", b"vk-url-token-456"]


def test_methods_are_upper_cased() -> None:
    c = load("""
        [[sources]]
        name = "vb"
        provider = "voipbin"
        token = "env:VOIPBIN_TOKEN"
        methods = ["put", "Get"]
    """)
    assert c.sources["vb"].methods == ("PUT", "GET")


def test_load_reads_the_file_named_by_hooklane_config(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(VR, encoding="utf-8")
    c = cfg_mod.load(env={**TEST_ENV, "HOOKLANE_CONFIG": str(path)})
    assert c.path == str(path)
    assert "vr" in c.sources


def test_missing_file_names_hooklane_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^HOOKLANE_CONFIG: no config file"):
        cfg_mod.load(env={"HOOKLANE_CONFIG": str(tmp_path / "nope.toml")})


def test_missing_file_given_by_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--config: no config file") as info:
        cfg_mod.load(tmp_path / "nope.toml", env={})
    assert "HOOKLANE_CONFIG" not in str(info.value)


def test_missing_default_file_names_both_ways_to_give_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"hooklane\.toml") as info:
        cfg_mod.load(env={})
    assert "--config" in str(info.value) and "HOOKLANE_CONFIG" in str(info.value)


def test_invalid_toml_is_a_config_error() -> None:
    assert "not valid TOML" in refused("[[sources]\nname=")


# --------------------------------------------------------------------------- unknown keys and types


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour = 1\n", "colour"),
        ("[redis]\nhost = 'x'\n", "redis.host"),
        ("[ingest]\nmax_body = 5\n", "ingest.max_body"),
        ("[worker]\nthreads = 5\n", "worker.threads"),
        ("[dead_letters]\nkeep = 5\n", "dead_letters.keep"),
        (VR + "secret = 'env:VR_SECRET'\n", "sources[0].secret"),
        ("[handlers.h]\ntype = 'log'\nuri = 'http://x'\n", "handlers.h.uri"),
        ("[handlers.h]\ntype = 'log'\n[[routes]]\nevents = ['*']\nhandlers = ['h']\nsource = ['vr']\n",
         "routes[0].source"),
    ],
)
def test_unknown_key_is_refused_by_its_dotted_name(text: str, key: str) -> None:
    msg = refused(text)
    assert msg.startswith(f"{key}: unknown key")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[ingest]\nmax_body_bytes = '1MB'\n", "ingest.max_body_bytes"),
        ("[ingest]\nmax_body_bytes = 0\n", "ingest.max_body_bytes"),
        ("[ingest]\ntrusted_proxies = -1\n", "ingest.trusted_proxies"),
        ("[ingest]\ntrusted_proxies = true\n", "ingest.trusted_proxies"),
        ("[ingest]\nretry_after_seconds = 1.5\n", "ingest.retry_after_seconds"),
        ("[ingest]\nrequest_read_timeout_seconds = 0\n", "ingest.request_read_timeout_seconds"),
        ("[ingest]\nrequest_read_timeout_seconds = -1\n", "ingest.request_read_timeout_seconds"),
        ("[ingest]\nrequest_read_timeout_seconds = '10s'\n", "ingest.request_read_timeout_seconds"),
        ("[ingest]\nmax_buffered_bytes = '64MB'\n", "ingest.max_buffered_bytes"),
        ("[ingest]\nmax_body_bytes = 2048\nmax_buffered_bytes = 2047\n", "ingest.max_buffered_bytes"),
        ("[redis]\nurl = 6379\n", "redis.url"),
        ("[redis]\nurl = 'http://localhost:6379'\n", "redis.url"),
        ("[redis]\nprefix = 'has space'\n", "redis.prefix"),
        ("redis = 'redis://x'\n", "redis"),
        ("sources = 'vr'\n", "sources"),
        ("handlers = ['log']\n", "handlers"),
        ("[worker]\nworker_class = 'thread'\n", "worker.worker_class"),
        ("[worker]\nbackoff_base_seconds = 'soon'\n", "worker.backoff_base_seconds"),
        (VR + "tolerance_seconds = '300'\n", "sources[0].tolerance_seconds"),
        (VR + "tolerance_seconds = 0\n", "sources[0].tolerance_seconds"),
        (VR + "insecure = 'yes'\n", "sources[0].insecure"),
        (VR + "allow_ips = [10]\n", "sources[0].allow_ips"),
        (VR + "methods = [1]\n", "sources[0].methods"),
        ("[[sources]]\nname = 'bad name'\nprovider = 'volumereach'\nsecrets = ['env:VR_SECRET']\n",
         "sources[0].name"),
        ("[[sources]]\nprovider = 'volumereach'\nsecrets = ['env:VR_SECRET']\n", "sources[0].name"),
        ("[[sources]]\nname = 'x'\nsecrets = ['env:VR_SECRET']\n", "sources[0].provider"),
        ("[handlers.h]\nurl = 'http://x'\n", "handlers.h.type"),
        ("[handlers.h]\ntype = 'webhook'\n", "handlers.h.type"),
        ("[handlers.h]\ntype = 'log'\nmax_attempts = 0\n", "handlers.h.max_attempts"),
        ("[handlers.h]\ntype = 'log'\ntimeout_seconds = 'ten'\n", "handlers.h.timeout_seconds"),
        ("[handlers.h]\ntype = 'log'\nheaders = {X = 1}\n", "handlers.h.headers"),
        ("[handlers.h]\ntype = 'suppression'\n", "handlers.h.outcomes"),
        ("[handlers.'a b']\ntype = 'log'\n", "handlers.a b"),
        ("[handlers.h]\ntype = 'log'\n[[routes]]\nhandlers = ['h']\n", "routes[0].events"),
        ("[handlers.h]\ntype = 'log'\n[[routes]]\nevents = []\nhandlers = ['h']\n", "routes[0].events"),
        ("[[routes]]\nevents = ['*']\n", "routes[0].handlers"),
    ],
)
def test_wrong_type_or_value_names_its_key(text: str, key: str) -> None:
    msg = refused(text)
    assert msg.startswith(f"{key}: "), msg


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("secrets", '["whsec_literal_value"]', "sources[0].secrets[0]"),
        ("secrets", '["env:VR_SECRET", "whsec_literal_value"]', "sources[0].secrets[1]"),
        ("secrets", '["env:"]', "sources[0].secrets[0]"),
        ("token", '"whsec_literal_value"', "sources[0].token"),
    ],
)
def test_literal_secret_is_refused_without_echoing_it(field: str, value: str, key: str) -> None:
    msg = refused(f"[[sources]]\nname = 'vr'\nprovider = 'volumereach'\n{field} = {value}\n")
    assert msg.startswith(f'{key}: secrets must be referenced as "env:NAME"')
    assert "whsec_literal_value" not in msg


def test_literal_handler_secret_is_refused() -> None:
    msg = refused("[handlers.crm]\ntype = 'http'\nurl = 'https://crm'\nsecret = 'whsec_literal_value'\n")
    assert msg.startswith("handlers.crm.secret: secrets must be referenced")
    assert "whsec_literal_value" not in msg


def test_missing_env_var_names_key_and_variable() -> None:
    msg = refused(VR.replace("env:VR_SECRET", "env:HOOKLANE_TEST_UNSET_VAR"))
    assert msg.startswith("sources[0].secrets[0]: environment variable HOOKLANE_TEST_UNSET_VAR is not set")


def test_empty_env_var_counts_as_missing() -> None:
    msg = refused(VR, VR_SECRET="")
    assert msg.startswith("sources[0].secrets[0]: environment variable VR_SECRET is not set or empty")


def test_secret_repr_and_str_never_show_the_value() -> None:
    s = Secret(b"hunter2-value", "env:PW")
    assert repr(s) == "Secret(env:PW)"
    assert str(s) == "Secret(env:PW)"
    assert f"{s}" == "Secret(env:PW)"
    assert "hunter2" not in repr([s]) + repr({"k": s}) + repr((s,))
    assert s.reveal() == b"hunter2-value"


def test_secret_has_no_instance_dict_to_dump() -> None:
    # vars()/__dict__ dumps (debug pages, some serializers) must not find the value.
    with pytest.raises(TypeError):
        vars(Secret(b"hunter2-value", "env:PW"))


def test_repr_of_a_whole_config_holds_no_secret_value(make_config: Callable[..., Config]) -> None:
    text = BASE_CONFIG + "\n[handlers.crm]\ntype = 'http'\nurl = 'https://crm.example'\nsecret = 'env:CRM_SECRET'\n"
    c = make_config(text)
    dumped = repr(c) + str(c) + repr(c.sources) + repr(c.handlers)
    for value in TEST_ENV.values():
        assert value not in dumped
    assert "env:VR_SECRET" in dumped


def test_config_errors_never_contain_a_secret_value() -> None:
    bad_texts = [
        VR + "tolerance_seconds = -5\n",
        VR + "methods = ['PUT']\n",
        VR + VR,
        "[[sources]]\nname = 'vb'\nprovider = 'voipbin'\nsecrets = ['env:VOIPBIN_TOKEN']\n",
        "[[sources]]\nname = 'vb'\nprovider = 'voipbin'\ntoken = 'env:VOIPBIN_TOKEN'\nallow_ips = ['x']\n",
    ]
    for text in bad_texts:
        msg = refused(text)
        for value in TEST_ENV.values():
            assert value not in msg


# --------------------------------------------------------------------------- sources


def test_unknown_provider_names_key_and_lists_the_known_ones() -> None:
    msg = refused("[[sources]]\nname = 'x'\nprovider = 'twillio'\ninsecure = true\n")
    assert msg.startswith("sources[0].provider: unknown provider 'twillio'")
    assert "volumereach" in msg and "voipbin" in msg


def test_duplicate_source_name_names_the_second_one() -> None:
    msg = refused(VR + "\n[[sources]]\nname = 'ok'\nprovider = 'voipbin'\ninsecure = true\n" + VR)
    assert msg.startswith("sources[2].name: duplicate source name 'vr'")


@pytest.mark.parametrize("provider", ["voipbin", "voicekit"])
def test_unauthenticated_unsigned_source_is_refused_without_insecure(provider: str) -> None:
    msg = refused(f"[[sources]]\nname = 'u'\nprovider = '{provider}'\n")
    assert msg.startswith("sources[0].name: source 'u' has no authentication")
    assert "token and/or allow_ips" in msg
    assert "insecure = true" in msg


def test_unauthenticated_signed_source_is_refused_without_insecure() -> None:
    msg = refused("[[sources]]\nname = 'u'\nprovider = 'volumereach'\n")
    assert msg.startswith("sources[0].name: source 'u' has no authentication")


@pytest.mark.parametrize("provider", ["voipbin", "voicekit", "volumereach"])
def test_insecure_true_allows_a_source_without_authentication(provider: str) -> None:
    c = load(f"[[sources]]\nname = 'u'\nprovider = '{provider}'\ninsecure = true\n")
    src = c.sources["u"]
    assert src.insecure is True
    assert (src.secrets, src.tokens, src.allow_ips) == ((), (), ())


def test_insecure_false_explicitly_is_still_refused() -> None:
    assert refused("[[sources]]\nname = 'u'\nprovider = 'voipbin'\ninsecure = false\n").startswith(
        "sources[0].name: source 'u' has no authentication"
    )


@pytest.mark.parametrize("provider", ["voipbin", "voicekit"])
def test_secrets_on_a_provider_that_does_not_sign_are_refused(provider: str) -> None:
    msg = refused(f"[[sources]]\nname = 'u'\nprovider = '{provider}'\nsecrets = ['env:VR_SECRET']\n")
    assert msg.startswith(f"sources[0].secrets: {provider} does not sign its webhooks")


@pytest.mark.parametrize("provider", ["voipbin", "voicekit"])
def test_allowlist_alone_authenticates_an_unsigned_source(provider: str) -> None:
    c = load(f"[[sources]]\nname = 'u'\nprovider = '{provider}'\nallow_ips = ['203.0.113.0/24', '2001:db8::/32']\n")
    assert c.sources["u"].allow_ips == (
        ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32"),
    )


def test_allowlist_host_bits_are_tolerated() -> None:
    c = load("[[sources]]\nname = 'u'\nprovider = 'voipbin'\nallow_ips = ['203.0.113.7/24', '198.51.100.1']\n")
    assert c.sources["u"].allow_ips == (
        ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("198.51.100.1/32"),
    )


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-an-ip", "10.0.0", "2001:db8::/129", "10.0.0.0/8/8"])
def test_bad_cidr_names_its_index(cidr: str) -> None:
    msg = refused(f"[[sources]]\nname = 'u'\nprovider = 'voipbin'\nallow_ips = ['10.0.0.0/8', '{cidr}']\n")
    assert msg.startswith("sources[0].allow_ips[1]: not an IP address or CIDR")


@pytest.mark.parametrize(("provider", "method"), [("volumereach", "PUT"), ("volumereach", "GET"),
                                                  ("voipbin", "PATCH"), ("voicekit", "DELETE")])
def test_method_the_provider_never_uses_is_refused(provider: str, method: str) -> None:
    auth = "secrets = ['env:VR_SECRET']" if provider == "volumereach" else "token = 'env:VOIPBIN_TOKEN'"
    msg = refused(f"[[sources]]\nname = 'u'\nprovider = '{provider}'\n{auth}\nmethods = ['POST', '{method}']\n")
    assert msg.startswith(f"sources[0].methods[1]: {provider} never sends {method}")


@pytest.mark.parametrize("method", ["POST", "PUT", "GET", "DELETE"])
def test_voipbin_may_be_configured_with_each_of_its_methods(method: str) -> None:
    c = load(f"[[sources]]\nname = 'vb'\nprovider = 'voipbin'\ntoken = 'env:VOIPBIN_TOKEN'\nmethods = ['{method}']\n")
    assert c.sources["vb"].methods == (method,)


# --------------------------------------------------------------------------- handlers and routes

ROUTED = VR + "\n[handlers.log]\ntype = 'log'\n"


def test_route_to_unknown_handler_names_its_index() -> None:
    msg = refused(ROUTED + "[[routes]]\nevents = ['*']\nhandlers = ['log', 'crm']\n")
    assert msg.startswith("routes[0].handlers[1]: unknown handler 'crm'")


def test_route_to_unknown_source_names_its_index() -> None:
    msg = refused(ROUTED + "[[routes]]\nevents = ['*']\nhandlers = ['log']\n"
                  "[[routes]]\nevents = ['*']\nsources = ['vr', 'vx']\nhandlers = ['log']\n")
    assert msg.startswith("routes[1].sources[1]: unknown source 'vx'")


@pytest.mark.parametrize("pattern", ["call*", "*.completed", "Call.Completed", "call.*.x*", "call completed",
                                     "call.**", ""])
def test_bad_event_pattern_is_refused(pattern: str) -> None:
    msg = refused(ROUTED + f"[[routes]]\nevents = ['call.completed', '{pattern}']\nhandlers = ['log']\n")
    assert msg.startswith("routes[0].events")


@pytest.mark.parametrize("pattern", ["*", "call.*", "call.completed", "voipbin.call_hungup", "voicekit.*"])
def test_good_event_patterns_load(pattern: str) -> None:
    c = load(ROUTED + f"[[routes]]\nevents = ['{pattern}']\nhandlers = ['log']\n")
    assert c.routes[0].events == (pattern,)


def test_routes_pick_handlers_in_order_once_each() -> None:
    c = load(ROUTED + "[handlers.log2]\ntype = 'log'\n"
             "[[routes]]\nevents = ['call.*']\nhandlers = ['log2', 'log']\n"
             "[[routes]]\nevents = ['*']\nsources = ['vr']\nhandlers = ['log']\n")
    assert [h.name for h in c.handlers_for("call.completed", "vr")] == ["log2", "log"]
    assert [h.name for h in c.handlers_for("campaign.started", "vr")] == ["log"]
    assert [h.name for h in c.handlers_for("campaign.started", "other")] == []


@pytest.mark.parametrize("url_line", ["", "url = ''", "url = 'ftp://crm.example/x'", "url = 'crm.example'"])
def test_http_handler_without_an_http_url_is_refused(url_line: str) -> None:
    msg = refused(f"[handlers.crm]\ntype = 'http'\n{url_line}\n")
    assert msg.startswith("handlers.crm.url: ")


def test_http_handler_with_url_and_env_secret_loads() -> None:
    c = load("[handlers.crm]\ntype = 'http'\nurl = 'https://crm.example/hook'\nsecret = 'env:CRM_SECRET'\n")
    h = c.handlers["crm"]
    assert h.url == "https://crm.example/hook"
    assert h.secret is not None and h.secret.reveal() == TEST_ENV["CRM_SECRET"].encode()


def test_python_handler_needs_a_target() -> None:
    assert refused("[handlers.py]\ntype = 'python'\n").startswith("handlers.py.target: ")


@pytest.mark.parametrize("target", ["no_such_module_hooklane_xyz:handle", "json", "json:", ":loads"])
def test_python_handler_with_an_unimportable_target_names_the_key(target: str) -> None:
    msg = refused(f"[handlers.py]\ntype = 'python'\ntarget = '{target}'\n")
    assert msg.startswith("handlers.py.target: ")


def test_python_handler_with_a_missing_attribute_names_the_key() -> None:
    msg = refused("[handlers.py]\ntype = 'python'\ntarget = 'json:no_such_function'\n")
    assert msg.startswith("handlers.py.target: 'json' has no attribute 'no_such_function'")


def test_python_handler_with_a_non_callable_target_names_the_key() -> None:
    msg = refused("[handlers.py]\ntype = 'python'\ntarget = 'hooklane.shared.config:DEFAULT_PATH'\n")
    assert msg.startswith("handlers.py.target: 'hooklane.shared.config:DEFAULT_PATH' is not callable")


@pytest.mark.parametrize("module_body", ["raise RuntimeError('boom at import')\n", "def broken(:\n",
                                         "import no_such_dependency_hooklane_xyz\n"])
def test_python_handler_whose_module_fails_at_import_is_a_config_error(
    module_body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module that raises (not only ImportError) must still fail check-config with the key, not a traceback.
    (tmp_path / "hooklane_broken_handler_mod.py").write_text(module_body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = refused("[handlers.py]\ntype = 'python'\ntarget = 'hooklane_broken_handler_mod:handle'\n")
    assert msg.startswith("handlers.py.target: cannot import 'hooklane_broken_handler_mod'")


def test_python_handler_resolves_a_dotted_attribute_to_the_callable() -> None:
    c = load("[handlers.py]\ntype = 'python'\ntarget = 'json:JSONDecoder.decode'\n")
    assert c.handlers["py"].callable is json.JSONDecoder.decode


# --------------------------------------------------------------------------- REDIS_URL


def test_redis_url_env_overrides_the_file(make_config: Callable[..., Config]) -> None:
    c = make_config(BASE_CONFIG, redis_url="redis://10.9.8.7:6380/3")
    assert c.redis.url == "redis://10.9.8.7:6380/3"


def test_without_redis_url_env_the_file_wins() -> None:
    assert load("[redis]\nurl = 'redis://file-host:6379/2'\n").redis.url == "redis://file-host:6379/2"


def test_empty_redis_url_env_does_not_override() -> None:
    assert load("[redis]\nurl = 'redis://file-host:6379/2'\n", REDIS_URL="").redis.url == "redis://file-host:6379/2"


def test_bad_redis_url_env_is_blamed_on_the_variable_without_echoing_it() -> None:
    # Managed services put the password in the URL: the error must not print it.
    msg = refused("[redis]\nurl = 'redis://ok:6379/0'\n", REDIS_URL="http://user:pa55word@host:6379")
    assert msg.startswith("REDIS_URL: ")
    assert "pa55word" not in msg


def test_bad_redis_url_in_file_names_the_key() -> None:
    msg = refused("[redis]\nurl = 'http://user:pa55word@host:6379'\n")
    assert msg.startswith("redis.url: ")
    assert "pa55word" not in msg


@pytest.mark.parametrize("value", ["not base64!", "whsec_", "whsec_a*b", "=="])
def test_http_handler_secret_must_be_a_standard_webhooks_secret(value: str) -> None:
    message = refused(VR + """
        [handlers.crm]
        type = "http"
        url = "https://crm.example/hook"
        secret = "env:CRM_SECRET"
    """, CRM_SECRET=value)
    assert message.startswith("handlers.crm.secret: a Standard Webhooks secret") and "(env:CRM_SECRET)" in message
