"""The package's ``mitm`` command (the console script ``pip install ./python`` puts in
the venv's ``bin``, and ``python -m mitm``): the Rust binary's command line, with
mitmproxy's addon scripts (``-s``).

Scripts are loaded by a factory; these tests name a stand-in of their own with
``MITM_ADDONS_FACTORY=module:attr`` (a Middleware that takes ``(scripts, options)``),
so they test the command's wiring (which files, which ``--set`` values, which hooks,
``mitm_started``/``mitm_stopped``), not the addon API itself.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from conftest import PATIENCE, Origin, Package, ProxyProcess, curl, listening_ports, port_is_free, wait_for

STAND_IN = '''
import mitm


class StandIn(mitm.Middleware):
    """Adds X-Stand-In (the option `tag`) to requests and responses; says when it
    starts and stops."""

    def __init__(self, scripts, options):
        if options.get("fail"):
            raise ValueError("no addon script declares the option fail")
        self.scripts = scripts
        self.options = options
        self.tag = options.get("tag", "none")

    async def mitm_started(self, host, port):
        print(f"stand-in started on {host}:{port} scripts={self.scripts} options={sorted(self.options.items())}", flush=True)

    async def request(self, flow):
        flow.request.headers["X-Stand-In"] = self.tag

    async def response(self, flow):
        flow.response.headers["X-Stand-In"] = self.tag

    async def mitm_stopped(self):
        print("stand-in stopped", flush=True)
'''

BANNER = re.compile(r"mitm listening on http://127\.0\.0\.1:(\d+) \(regular\)")


@pytest.fixture
def command(ours: Package) -> Path:
    """The ``mitm`` console script of the Python running the tests."""
    path = Path(ours.python).parent / "mitm"
    if not path.exists():
        pytest.fail(f"{path} is missing: `pip install ./python` installs the mitm command beside {ours.python}")
    return path


@pytest.fixture
def cli_env(proxy_env: Dict[str, str], tmp_path: Path) -> Dict[str, str]:
    """The proxy's environment, with the stand-in factory importable and named."""
    (tmp_path / "standin.py").write_text(STAND_IN)
    return {**proxy_env, "PYTHONPATH": str(tmp_path), "MITM_ADDONS_FACTORY": "standin:StandIn"}


@pytest.fixture
def start(command: Path, cli_env: Dict[str, str], tmp_path: Path) -> Callable[..., ProxyProcess]:
    """``start(*args)`` runs ``mitm --ca-dir CA -p 0 *args`` and waits for its banner;
    the port is the one it prints."""
    started: List[ProxyProcess] = []

    def run(*args: str) -> ProxyProcess:
        argv = ["--ca-dir", str(tmp_path / "ca"), "-p", "0", *args]
        proc = ProxyProcess(Package("mitm command", str(command)), argv, cli_env, tmp_path / f"mitm-{len(started)}.log")
        started.append(proc)

        def banner() -> "re.Match[str] | None":
            if proc.proc.poll() is not None:
                pytest.fail(f"mitm exited ({proc.proc.returncode}) before listening:\n{proc.output()}", pytrace=False)
            return BANNER.search(proc.output())

        proc.port = int(wait_for("the banner", banner).group(1))
        return proc

    yield run
    for proc in started:
        proc.stop()


def run(command: Path, env: Dict[str, str], *args: str, cwd: "Path | None" = None) -> subprocess.CompletedProcess:
    """Runs the command to its end."""
    return subprocess.run(
        [str(command), *args], capture_output=True, text=True, env=env, timeout=PATIENCE, cwd=cwd, stdin=subprocess.DEVNULL
    )


def test_the_command_serves_saves_and_exits_cleanly_on_ctrl_c(
    start: Callable[..., ProxyProcess], command: Path, cli_env: Dict[str, str], origin: Origin, tmp_path: Path
) -> None:
    saved = tmp_path / "flows.har"
    proxy = start("--save", str(saved))
    # The port it prints is the one it listens on.
    assert listening_ports(proxy.proc.pid) == [proxy.port]
    got = curl(origin.url("/cli"), proxy=proxy.address)
    assert (got.exit, got.status, got.body) == (0, 200, Origin.body("GET", "/cli")), got.stderr
    assert proxy.interrupt() == 0, proxy.output()
    assert port_is_free(proxy.port)
    # The subcommands: `mitm read` prints what the proxy saved.
    done = run(command, cli_env, "read", str(saved))
    assert done.returncode == 0, done.stderr
    assert origin.url("/cli") in done.stdout and " 200 " in done.stdout, done.stdout


def test_sigterm_stops_it_as_ctrl_c_does(start: Callable[..., ProxyProcess]) -> None:
    proxy = start()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(PATIENCE) == 0, proxy.output()
    assert port_is_free(proxy.port)


def test_scripts_run_through_the_factory_with_their_options(
    start: Callable[..., ProxyProcess], origin: Origin, tmp_path: Path
) -> None:
    script = tmp_path / "addon.py"
    script.write_text("def request(flow):\n    pass\n")
    proxy = start("-s", str(script), "--set", "tag=hello", "--set", "listen_host=127.0.0.1")
    # The factory got the script and the setting no option of the command takes;
    # mitm_started ran once the proxy listened.
    out = proxy.wait_output("stand-in started")
    assert f"stand-in started on 127.0.0.1:{proxy.port} scripts=['{script}'] options=[('tag', 'hello')]" in out, out
    got = curl(origin.url("/scripted"), proxy=proxy.address, args=["-D", "-"])
    assert got.status == 200, got.stderr
    # The response hook reached the client, the request hook the origin.
    assert b"X-Stand-In: hello" in got.body, got.body
    method, path, headers, _ = origin.requests[-1]
    assert (method, path, headers.get("X-Stand-In")) == ("GET", "/scripted", "hello")
    assert proxy.interrupt() == 0, proxy.output()
    # mitm_stopped ran once the proxy had stopped, before the command returned.
    assert "stand-in stopped" in proxy.output(), proxy.output()
    assert port_is_free(proxy.port)


def test_scripts_are_told_when_the_proxy_cannot_start(
    start: Callable[..., ProxyProcess], command: Path, cli_env: Dict[str, str], tmp_path: Path
) -> None:
    taken = start()
    (tmp_path / "addon.py").write_text("def request(flow):\n    pass\n")
    done = run(command, cli_env, "--ca-dir", str(tmp_path / "ca"), "-p", str(taken.port), "-s", "addon.py", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "mitm: error: cannot start the proxy" in done.stderr, done.stderr
    assert "stand-in started" not in done.stdout and "stand-in stopped" in done.stdout, done.stdout


def test_python_dash_m_mitm_is_the_same_command(ours: Package, command: Path, cli_env: Dict[str, str]) -> None:
    by_module = subprocess.run(
        [ours.python, "-m", "mitm", "--version"], capture_output=True, text=True, env=cli_env, timeout=PATIENCE, cwd="/"
    )
    by_script = run(command, cli_env, "--version")
    assert by_module.returncode == by_script.returncode == 0, by_module.stderr + by_script.stderr
    assert by_module.stdout == by_script.stdout and by_script.stdout.startswith("mitm "), by_script.stdout
    # The usage names the command `mitm` either way.
    usage = subprocess.run(
        [ours.python, "-m", "mitm", "--no-such-option"], capture_output=True, text=True, env=cli_env, timeout=PATIENCE, cwd="/"
    )
    assert usage.returncode == 2 and "Usage: mitm " in usage.stderr, usage.stderr


def test_mitm_ca_works_from_the_pip_command(command: Path, cli_env: Dict[str, str], tmp_path: Path) -> None:
    done = run(command, cli_env, "ca", "--ca-dir", str(tmp_path / "ca"))
    assert done.returncode == 0, done.stderr
    assert f"CA certificate: {tmp_path / 'ca' / 'mitm.pem'}" in done.stdout, done.stdout
    assert "-----BEGIN CERTIFICATE-----" in done.stdout


@pytest.mark.parametrize(
    "args, code, message",
    [
        # A script that is not there: refused before anything starts.
        (["-s", "missing.py"], 1, "mitm: error: -s missing.py: cannot read the script"),
        # A setting no option takes, without scripts: refused, as the binary does.
        (["--set", "tag=hello"], 2, "--set tag=hello: no option is named tag"),
        # One of mitmproxy's options with no equivalent: refused even with scripts.
        (["-s", "addon.py", "--set", "http3=true"], 2, "mitmproxy's option http3 has no equivalent here"),
        # The factory's error (here: an option no script declares) ends the start.
        (["-s", "addon.py", "--set", "fail=1"], 1, "no addon script declares the option fail"),
        # -s with -n: no proxy for scripts to see.
        (["-n", "-s", "addon.py"], 1, "-n runs no proxy"),
    ],
)
def test_bad_starts_say_why(
    command: Path, cli_env: Dict[str, str], tmp_path: Path, args: List[str], code: int, message: str
) -> None:
    (tmp_path / "addon.py").write_text("def request(flow):\n    pass\n")
    done = run(command, cli_env, "--ca-dir", str(tmp_path / "ca"), "-p", "0", *args, cwd=tmp_path)
    assert done.returncode == code, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    assert "mitm listening" not in done.stdout
    assert "panicked" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_factory_that_cannot_be_imported_says_so(command: Path, cli_env: Dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "addon.py").write_text("def request(flow):\n    pass\n")
    env = {**cli_env, "MITM_ADDONS_FACTORY": "no_such_module_here:Addons"}
    done = run(command, env, "--ca-dir", str(tmp_path / "ca"), "-p", "0", "-s", "addon.py", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "mitm: error: cannot load the addon scripts: addon scripts need no_such_module_here" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_a_factory_that_raises_shows_its_traceback(command: Path, cli_env: Dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "addon.py").write_text("def request(flow):\n    pass\n")
    (tmp_path / "broken.py").write_text("def Broken(scripts, options):\n    return {}['missing']\n")
    env = {**cli_env, "MITM_ADDONS_FACTORY": "broken:Broken"}
    done = run(command, env, "--ca-dir", str(tmp_path / "ca"), "-p", "0", "-s", "addon.py", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "mitm: error: cannot load the addon scripts: KeyError: 'missing'" in done.stderr, done.stderr
    assert "broken.py\", line 2, in Broken" in done.stderr, done.stderr
