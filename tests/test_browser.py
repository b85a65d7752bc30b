"""The notebooks in a real JupyterLab, driven by a real headless Chromium (issue 13).

`jupyter lab` is started from the repository root through this project's environment, on
127.0.0.1 with a token. For each notebook the test opens it as a user would,
types the `tiny` preset (and a temporary runs/figures folder; a synthetic data folder only when
CCQL_DATA_ROOT is unset) over the lines of its parameters cell, runs all cells from the Run menu,
and checks what the page shows: no error output, every cell executed, the figure as an image in
an output area, the results table as an HTML table, the project's kernel ("Python (ccql)"), and
no cell printing more than a screenful of progress lines. A screenshot of each executed notebook
goes to outputs/browser/ (git-ignored); the committed notebooks are never saved over (autosave
is off and their bytes are compared before and after).

Needs Chromium and its driver (Debian: apt-get install chromium chromium-driver) and selenium;
skipped, with the reason, without them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT_ROOT / "notebooks"
ARTIFACTS = PROJECT_ROOT / "outputs" / "browser"
KERNEL_NAME, KERNEL_DISPLAY = "ccql", "Python (ccql)"
RUN_TIMEOUT_S = 900          # one notebook at tiny (about 40 s)
MAX_OUTPUT_LINES = 50        # text lines any one cell may print at tiny (progress included)
# One experiment notebook from the repository root, as docs/jupyterlab.md starts JupyterLab. The
# other notebooks run headless under nbval (the same cells and calls); the theory notebook and a
# server started in notebooks/ are left out to keep CI within its time (docs/jupyterlab.md, "The
# browser test"). The kernel runs in notebooks/ either way, which is what the notebooks' relative
# paths depend on.
CASES = [("root", "01_k25_random.ipynb")]


def _find(name: str, *candidates: str) -> str | None:
    return next((c for c in candidates if c and Path(c).is_file()), None) or shutil.which(name)


CHROMIUM = _find("chromium", os.environ.get("CHROMIUM", ""), "/usr/bin/chromium")
CHROMEDRIVER = _find("chromedriver", os.environ.get("CHROMEDRIVER", ""), "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def webdriver_module():
    """Selenium's webdriver; skips (fails with CCQL_REQUIRE_BROWSER=1, as in CI) without
    selenium, Chromium or chromedriver."""
    absent = pytest.fail if os.environ.get("CCQL_REQUIRE_BROWSER") == "1" else pytest.skip
    try:
        from selenium import webdriver
    except ImportError:
        absent("selenium is not installed (pip install -e .[test])")
    if not CHROMIUM or not CHROMEDRIVER:
        absent("Chromium or chromedriver not found (Debian: apt-get install chromium "
               "chromium-driver; or set CHROMIUM and CHROMEDRIVER)")
    return webdriver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(folder: Path) -> Path:
    """JupyterLab user settings for the test: no autosave (the committed notebooks must not be
    written), no news or update notifications over the page, every cell kept in the DOM."""
    for plugin, values in {
            "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                            "checkForUpdates": False},
            "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"}}.items():
        path = folder / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return folder


class Server:
    """`jupyter lab` started in `cwd` the way a user starts it, plus what the test needs."""

    def __init__(self, cwd: Path, scratch: Path):
        self.cwd, self.port = cwd, _free_port()
        self.token = hashlib.sha256(os.urandom(16)).hexdigest()[:32]
        self.url = f"http://127.0.0.1:{self.port}"
        jupyter = Path(sys.executable).with_name("jupyter")  # this project's environment
        command = [str(jupyter), "lab"] if jupyter.exists() else [sys.executable, "-m", "jupyterlab"]
        command += ["--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                    "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                    f"--LabApp.user_settings_dir={_settings(scratch / 'settings')}",
                    f"--LabApp.workspaces_dir={scratch / 'workspaces'}",
                    "--LabApp.expose_app_in_browser=True"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.append("--allow-root")
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(scratch / "config")}
        env.pop("MPLBACKEND", None)  # CI sets Agg; a user's JupyterLab shows figures inline
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"jupyterlab-{cwd.name}.log"
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"jupyter lab did not start; log: {self.log_path}\n"
                                       + self.log_path.read_text()[-3000:])
                time.sleep(0.5)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        with opener.open(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self):
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def servers(webdriver_module, tmp_path_factory):
    started: dict[str, Server] = {}

    def get(start: str) -> Server:
        if start not in started:
            cwd = PROJECT_ROOT if start == "root" else NOTEBOOKS
            started[start] = Server(cwd, tmp_path_factory.mktemp(f"jupyter-{start}"))
        return started[start]

    yield get
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def data_lines(tmp_path_factory):
    """What to type for the data: nothing with CCQL_DATA_ROOT set (the kernel inherits it, as a
    user's does), else a synthetic stand-in's folder with verify_data = False."""
    if os.environ.get("CCQL_DATA_ROOT"):
        return {}
    from ccql_utils.core.data import write_synthetic_cifar100
    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_cifar100(root, train_per_class=12, test_per_class=6)
    return {"data_root": repr(str(root)), "verify_data": "False"}


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")  # one store: 03 reuses 01's QL run, trains its own


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.ipynb")}


# The notebook's state, read from the JupyterLab application the page runs (exposed with
# --LabApp.expose_app_in_browser): cells with execution counts and outputs, the kernel.
STATE_JS = """
const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext) return null;
const session = panel.sessionContext.session;
const kernel = session && session.kernel;
return {
  kernel: kernel ? {name: kernel.name, status: kernel.status} : null,
  kernelDisplayName: panel.sessionContext.kernelDisplayName,
  cells: panel.content.widgets.map(cell => ({
    type: cell.model.type,
    source: cell.model.sharedModel.getSource(),
    count: cell.model.type === 'code' ? cell.model.executionCount : null,
    prompt: cell.node.querySelector('.jp-InputPrompt') ?
            cell.node.querySelector('.jp-InputPrompt').textContent : '',
    outputs: cell.model.type === 'code' ? cell.model.outputs.toJSON() : []})),
};
"""


def _wait(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _set_parameter_lines(driver, cell, values: dict[str, str]):
    """Set each parameter in the parameters cell, typing as a user does: a `name = ...` line the
    cell has is replaced (click it, Home, Shift+End, type), another name goes on a new last line
    (the cell sets a few of the figure's parameters; any other may be added)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    for name, value in values.items():
        all_lines = cell.find_elements(By.CSS_SELECTOR, ".cm-line")
        lines = [line for line in all_lines if re.match(rf"{re.escape(name)}\s*=", line.text)]
        assert len(lines) <= 1, f"parameters cell: two lines assigning {name}"
        target = lines[0] if lines else all_lines[-1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
        actions = ActionChains(driver).click(target)
        if lines:
            actions = actions.send_keys(Keys.HOME).key_down(Keys.SHIFT).send_keys(Keys.END).key_up(Keys.SHIFT)
        else:
            actions = actions.send_keys(Keys.END).send_keys(Keys.ENTER)
        actions.send_keys(f"{name} = {value}").perform()


def _run_all_from_the_menu(driver):
    from selenium.webdriver.common.by import By
    menu = next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel")
                if e.text == "Run")
    menu.click()
    item = _wait(lambda: [e for e in driver.find_elements(
        By.CSS_SELECTOR, "li.lm-Menu-item[data-command='runmenu:run-all']")
        if e.is_displayed()], 10, "Run > Run All Cells")[0]
    item.click()


def _error_text(output: dict) -> str:
    text = "\n".join(output.get("traceback", [])) or f"{output.get('ename')}: {output.get('evalue')}"
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[-3000:]


def _stream_lines(outputs: list[dict]) -> int:
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    return len(text.splitlines())


@pytest.mark.parametrize("start,name", CASES, ids=[f"{s}-{n.split('_')[0]}" for s, n in CASES])
def test_notebook_runs_in_jupyterlab(start, name, servers, webdriver_module, data_lines,
                                     shared_runs, tmp_path):
    from selenium.webdriver.common.by import By
    server = servers(start)
    before = _digest(NOTEBOOKS)
    figures = tmp_path / "figures"
    typed = {"preset": '"tiny"', **data_lines, "runs_dir": repr(str(shared_runs)),
             "figures_dir": repr(str(figures))}

    options = webdriver_module.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,2000", "--no-proxy-server", "--disable-gpu"):
        options.add_argument(argument)
    options.set_capability("unhandledPromptBehavior", "accept")
    from selenium.webdriver.chrome.service import Service
    driver = webdriver_module.Chrome(service=Service(CHROMEDRIVER), options=options)
    started = time.monotonic()
    try:
        path = f"notebooks/{name}" if start == "root" else name
        workspace = f"{start}-{name.split('_')[0]}"
        driver.get(f"{server.url}/lab/workspaces/{workspace}/tree/{path}?token={server.token}")
        state = lambda: driver.execute_script(STATE_JS)  # noqa: E731
        _wait(lambda: (s := state()) and s["kernel"] and s["kernel"]["status"] == "idle"
              and len(s["cells"]) > 3, 120, f"{name} open with an idle kernel")
        code_cells = driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell.jp-CodeCell")
        parameters = next(c for c in code_cells if c.find_elements(By.CSS_SELECTOR, ".cm-line")
                          and c.find_elements(By.CSS_SELECTOR, ".cm-line")[0].text
                          .startswith("# Parameters"))
        _set_parameter_lines(driver, parameters, typed)
        source = next(c["source"] for c in state()["cells"] if c["source"].startswith("# Parameters"))
        for key, value in typed.items():
            assert f"\n{key} = {value}\n" in f"\n{source}\n", (key, source)

        _run_all_from_the_menu(driver)
        _wait(lambda: any("*" in c["prompt"] or c["count"] for c in state()["cells"]), 60,
              "Run All to start")

        def finished():
            s = state()
            busy = s["kernel"]["status"] != "idle" or any("*" in c["prompt"] for c in s["cells"])
            return None if busy else s
        _wait(finished, RUN_TIMEOUT_S, f"{name} to finish", interval=2)
        s = _wait(finished, 30, "the kernel to stay idle")  # a second look, after a pause
        seconds = time.monotonic() - started

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{start}-{name.removesuffix('.ipynb')}.png"
        images = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img")
        if images:  # the (first) figure at the bottom of the view, the cells that made it above
            driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", images[0])
            time.sleep(0.5)
        driver.save_screenshot(str(shot))

        errors = [_error_text(o) for c in s["cells"] for o in c["outputs"]
                  if o.get("output_type") == "error"]
        assert not errors, f"{name}: error output in JupyterLab:\n" + "\n\n".join(errors)
        unexecuted = [c["source"][:80] for c in s["cells"] if c["type"] == "code" and not c["count"]]
        assert not unexecuted, f"{name}: cells not executed: {unexecuted}"
        assert s["kernel"]["name"] == KERNEL_NAME and s["kernelDisplayName"] == KERNEL_DISPLAY, s["kernel"]
        toolbar = driver.find_elements(By.XPATH, "//*[contains(@class, 'jp-NotebookPanel-toolbar')]"
                                                 f"//*[normalize-space(text())='{KERNEL_DISPLAY}']")
        assert toolbar, f"the notebook toolbar does not show the kernel {KERNEL_DISPLAY}"
        spec = server.api("kernelspecs")["kernelspecs"][KERNEL_NAME]["spec"]
        assert Path(spec["argv"][0]).parent == Path(sys.executable).parent, spec["argv"]

        shown = driver.execute_script(
            "return Array.from(arguments[0]).filter(i => i.complete && i.naturalWidth > 100).length",
            images)
        assert shown >= 1, f"{name}: no figure displayed in the page"
        tables = [t.text for t in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output table")]
        assert any("test acc" in t and "tiny" in t for t in tables), f"{name}: no results table shown"
        assert list(figures.glob("*.png")), f"{name}: no figure saved in the typed figures_dir"
        long = {c["source"][:60]: _stream_lines(c["outputs"]) for c in s["cells"]
                if _stream_lines(c["outputs"]) > MAX_OUTPUT_LINES}
        assert not long, f"{name}: cells printing more than {MAX_OUTPUT_LINES} lines: {long}"
        print(f"{start}/{name}: opened, edited and run in JupyterLab in {seconds:.0f} s; "
              f"screenshot {shot.relative_to(PROJECT_ROOT)}")
    finally:
        driver.quit()
        server.shutdown_kernels()
    assert _digest(NOTEBOOKS) == before, "the committed notebooks were written during the test"
