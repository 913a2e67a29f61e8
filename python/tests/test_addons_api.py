"""The addon host's API in-process: options, the ``mitmproxy`` import, the filter, and
what the compatibility layer refuses."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import Package
from mitm.addons import Addons, OptionsError


def script(tmp_path: Path, text: str, name: str = "s.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


OPTIONS = """
    import typing
    from mitmproxy import ctx

    def load(loader):
        loader.add_option("n", int, 1, "a number")
        loader.add_option("on", bool, False, "a switch")
        loader.add_option("names", typing.Sequence[str], [], "some names")
        loader.add_option("maybe", typing.Optional[str], None, "text or None")
"""


def test_set_values_are_converted_by_the_declared_type(tmp_path: Path) -> None:
    addons = Addons([script(tmp_path, OPTIONS)], {"n": "7", "on": "true", "names": "a,b", "maybe": "x"}, reload=False)
    o = addons.options
    assert (o.n, o.on, o.names, o.maybe) == (7, True, ["a", "b"], "x")
    addons.close()


def test_a_value_of_the_wrong_type_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="option n takes an integer, not 'seven'"):
        Addons([script(tmp_path, OPTIONS)], {"n": "seven"}, reload=False)


def test_an_option_no_script_declares_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="No such option: nope"):
        Addons([script(tmp_path, OPTIONS)], {"nope": "1"}, reload=False)


def test_reading_an_undeclared_option_names_it(tmp_path: Path) -> None:
    addons = Addons([script(tmp_path, OPTIONS)], reload=False)
    with pytest.raises(AttributeError, match="No such option: listen_port"):
        addons.options.listen_port
    addons.close()


def test_only_the_engine_hooks_the_scripts_need_are_planned(tmp_path: Path) -> None:
    from mitm import _bridge
    from mitm.core import Middleware
    from mitm.http import message_plan

    only_response = script(tmp_path, "def response(flow):\n    pass\n")
    addons = Addons([only_response], reload=False)
    plan = _bridge.plan(addons, Middleware)
    assert plan["client_connected"] is None and plan["server_connected"] is None
    assert plan["mitm_started"] is not None and plan["mitm_started"][3] is True  # blocking kind
    messages = message_plan(addons, Middleware)
    assert messages is not None and messages["request"] is None and messages["response"] is not None
    assert messages["flow_finished"] is None and messages["websocket_message"] is None
    # With reload, every hook is planned (a reloaded script may gain any), behind a gate
    # that is off while no script needs it: the engine skips the call.
    reloading = Addons([only_response])
    gated = _bridge.plan(reloading, Middleware)["client_connected"][3]
    assert (gated.active, gated.blocking) == (False, False)
    on = message_plan(reloading, Middleware)["response"][3]
    assert (on.active, on.blocking) == (True, True)


def test_a_script_that_fails_to_import_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    addons = Addons([script(tmp_path, "import no_such_module_here\n")], reload=False)
    assert addons.scripts[0].addons == []
    assert "No module named 'no_such_module_here'" in caplog.text and "Traceback" in caplog.text


def test_unsupported_hooks_are_reported_at_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    Addons([script(tmp_path, "def tls_start_client(data):\n    pass\n")], reload=False)
    assert "tls_start_client, which mitm's addon host does not call" in caplog.text


def test_flowfilter_errors_say_where() -> None:
    from mitm.addons.compat import flowfilter

    with pytest.raises(ValueError, match="unknown operator ~x"):
        flowfilter.parse("~m GET & ~x")
    assert str(flowfilter.parse("~d example\\.com")) == "~d example\\.com"


def test_unsupported_names_raise_attribute_error_naming_them() -> None:
    from mitm.addons.compat import http
    import mitm.addons.compat as mitmproxy

    response = http.Response.make(200, b"x")
    with pytest.raises(AttributeError, match="Response.trailers"):
        response.trailers
    with pytest.raises(AttributeError, match="mitmproxy.tls"):
        mitmproxy.tls
    with pytest.raises(AttributeError, match="Response.stream"):
        response.stream = True
    request = http.Request.make("GET", "http://example.com/a?b=1", b"", {"host": "example.com"})
    assert request.pretty_url == "http://example.com/a?b=1" and request.query["b"] == "1"


def test_a_real_mitmproxy_is_not_shadowed(ours: Package, tmp_path: Path) -> None:
    """Scripts get the compat layer; other code gets the mitmproxy installed."""
    fake = tmp_path / "site" / "mitmproxy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("REAL = True\n")
    addon = script(tmp_path, "import mitmproxy\nfrom mitmproxy import http\nKIND = mitmproxy.__name__\n")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path / "site")!r})
        from mitm.addons import Addons
        a = Addons([{addon!r}], reload=False)
        import mitmproxy
        print(a.scripts[0].module.KIND, getattr(mitmproxy, "REAL", False))
        """
    )
    assert ours.run(code).splitlines()[-1].split() == ["mitm.addons.compat", "True"]


def test_without_a_real_mitmproxy_helpers_get_the_layer(ours: Package, tmp_path: Path) -> None:
    helper = tmp_path / "helper_mod.py"
    helper.write_text("from mitmproxy import ctx\nOPTIONS = ctx.options\n")
    addon = script(tmp_path, "import helper_mod\nfrom mitmproxy import ctx\nSAME = helper_mod.OPTIONS is ctx.options\n")
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        if importlib.util.find_spec("mitmproxy") is not None:
            print("skip")
        else:
            from mitm.addons import Addons
            a = Addons([{addon!r}], reload=False)
            print(a.scripts[0].module.SAME)
        """
    )
    assert ours.run(code).splitlines()[-1] in ("True", "skip")


def test_a_reloaded_script_gains_hooks_through_the_gates(tmp_path: Path) -> None:
    from mitm import _bridge
    from mitm.core import Middleware

    path = script(tmp_path, "def request(flow):\n    pass\n")
    addons = Addons([path])
    gate = _bridge.plan(addons, Middleware)["client_connected"][3]
    assert not gate.active
    Path(path).write_text("def request(flow):\n    pass\n\ndef client_connected(client):\n    pass\n")
    addons._host.reload(addons.scripts[0])
    assert (gate.active, gate.blocking) == (True, True)
    Path(path).write_text("def request(flow):\n    return (\n")  # broken: left out, gates off
    addons._host.reload(addons.scripts[0])
    assert not gate.active
    addons.close()


def test_an_unsupported_mitmproxy_module_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    addons = Addons([script(tmp_path, "from mitmproxy.net.http import status_codes\n")], reload=False)
    assert addons.scripts[0].addons == []
    assert "mitmproxy.net is part of mitmproxy's API that mitm's addon host does not support" in caplog.text


def test_options_survive_a_reload_and_dropped_ones_go(tmp_path: Path) -> None:
    path = script(tmp_path, OPTIONS)
    addons = Addons([path], {"n": "7"})
    Path(path).write_text(textwrap.dedent(OPTIONS).replace('loader.add_option("on", bool, False, "a switch")', "pass"))
    addons._host.reload(addons.scripts[0])
    assert addons.options.n == 7  # the value given is kept
    with pytest.raises(AttributeError, match="No such option: on"):
        addons.options.on
    addons.close()


def test_flows_of_a_keep_alive_connection_are_let_go(tmp_path: Path) -> None:
    """A script with a request hook and no flow_finished one (the host plans every hook
    and gates the ones no script defines): each exchange's flow is freed once over, not
    kept by its connection until the connection ends (it was, ~10 KiB a request)."""
    import asyncio
    import gc

    from mitm.http import HttpFlow
    from test_hot_path import get, through

    addons = Addons([script(tmp_path, """
        def request(flow):
            flow.request.headers["x-seen"] = "1"
    """)])

    async def client(proxy: int, port: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
        for _ in range(300):
            await get(reader, writer, port)
        # The connection is still open: what it holds now is what it would keep.
        gc.collect()
        alive = sum(isinstance(o, HttpFlow) for o in gc.get_objects())
        writer.close()
        return alive

    alive = asyncio.run(through(tmp_path, addons, client))
    assert alive < 10, f"{alive} flows of 300 exchanges still alive on an open connection"
