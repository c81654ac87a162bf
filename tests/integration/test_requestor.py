"""The requestor library end to end: a requestor node on anvil, wasmtime providers, all through the REST API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from requestor import (
    ApiError,
    ConfigurationError,
    Golem,
    Prices,
    Resources,
    Script,
    WasmPackage,
    WorkContext,
)
from requestor.errors import CommandError
from tests.integration.harness import REPO, NodeProcess, Testnet, free_port, wait_for
from tests.integration.payment_support import (
    LocalChain,
    local_chain,
    payment_call,
    payment_env,
    provider_env,
    token_balance,
    wasm_package,
)

pytestmark = pytest.mark.integration


@dataclass
class Net:
    """A funded requestor serving its REST API, providers, the chain and the package."""

    testnet: Testnet
    local: LocalChain
    requestor: NodeProcess
    providers: list[NodeProcess]
    package: str
    api_url: str
    key: str
    www: Path

    def golem(self, **kw: Any) -> Golem:
        kw.setdefault("budget", "10")
        kw.setdefault("invoice_wait_s", 60.0)
        return Golem(
            app_key=self.key, api_url=self.api_url, payment_network="local", data_dir=self.requestor.data_dir,
            progress=False, **kw,
        )  # fmt: skip


def app_key(node: NodeProcess, name: str = "requestor-lib") -> str:
    """A new app-key, made with the CLI."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "app-key", "create", "--data-dir", str(node.data_dir), name],
        cwd=REPO, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def net(testnet: Testnet, tmp_path: Path) -> Iterator[Net]:
    with local_chain(tmp_path) as local, wasm_package(tmp_path) as package:
        requestor = testnet.add("requestor", env=payment_env(local, LOAM_API__PORT=str(free_port())))
        # Debit notes every 2 s, so that sessions of a few seconds get some to check and accept.
        env = provider_env(local, LOAM_PROVIDER__DEBIT_NOTE_INTERVAL_S="2", LOAM_API__ENABLED="false")
        providers = [testnet.add(f"provider-{i}", env=env) for i in range(3)]
        payment_call(requestor, "fund", amount="100", timeout_s=90)
        wait_for("three offers", lambda: len(requestor.market("known_offers")) >= 3, 60)
        api_url = json.loads((requestor.data_dir / "node.json").read_text())["api"]
        yield Net(testnet, local, requestor, providers, package, api_url, app_key(requestor), tmp_path / "www")


async def hello(ctx: WorkContext, name: str) -> str:
    script = ctx.script()
    out = script.run("hello", name)
    await ctx.run(script)
    return out.stdout.strip()


def test_many_tasks_with_files_run_across_providers_and_are_paid_on_chain(net: Net, tmp_path: Path) -> None:
    inputs = []
    for i in range(8):
        path = tmp_path / f"in-{i}.txt"
        path.write_text(" ".join(["word"] * (i + 1)) + "\n")
        inputs.append(path)
    before = {p.node_id: token_balance(net.local, p.node_id) for p in net.providers}

    async def count(ctx: WorkContext, path: Path) -> dict[str, Any]:
        out = path.with_suffix(".out")
        script = ctx.script()
        script.send_file(path, "/input/data.txt")  # published with gftp, fetched by the provider
        words = script.run("wc", "/input/data.txt", "/output/counts.txt")
        script.download_file("/output/counts.txt", out)  # uploaded by the provider to a gftp slot
        await ctx.run(script)
        assert out.read_text() == words.stdout
        return {"words": int(words.stdout.split()[1]), "provider": ctx.provider_id}

    async def main() -> tuple[list[Any], Golem]:
        async with net.golem() as golem:
            # Two tasks in flight per activity: batches queue on the provider behind each other.
            tasks = [t async for t in golem.execute_tasks(count, inputs, payload=WasmPackage(net.package), max_workers=3,
                                                          timeout_s=60, pipeline=2)]  # fmt: skip
        return tasks, golem

    tasks, golem = asyncio.run(main())
    assert sorted(t.index for t in tasks) == list(range(8))
    assert all(t.status == "done" for t in tasks), [t.error for t in tasks]
    assert {t.index: t.result["words"] for t in tasks} == {i: i + 1 for i in range(8)}
    used = {t.result["provider"] for t in tasks}
    assert len(used) >= 2, used
    # Every agreement that ran work was invoiced, checked and accepted, then paid on the chain.
    assert golem.spent > 0 and not golem.rejected
    assert set(golem._invoiced) == {a for a, ag in golem._ended.items() if ag.activities}

    def paid() -> bool:
        return all(token_balance(net.local, p) > before[p] for p in used)

    wait_for("the providers paid on chain", paid, 90, interval_s=0.5)
    gained = sum(token_balance(net.local, p) - before[p] for p in used)
    assert Decimal(gained) / 10**18 == golem.spent


def test_streaming_output_and_a_service_that_runs_commands_and_stops(net: Net) -> None:
    async def main() -> None:
        async with net.golem() as golem:
            service = await golem.run_service(WasmPackage(net.package))
            assert service.running and service.provider_id in {p.node_id for p in net.providers}
            first = await service.exec("hello", "one")
            assert "one" in first.stdout
            events: list[Any] = []
            streamed = await service.exec("hello", "streamed", stream=True, on_event=events.append)
            assert "streamed" in streamed.stdout
            kinds = [e.kind for e in events]
            assert kinds[0] == "started" and "stdout" in kinds and kinds[-1] == "finished", kinds
            with pytest.raises(CommandError, match="command 0 \\(run\\) failed"):
                await service.exec("exitcode", "3")
            again = await service.exec("hello", "still-there")  # a failed command does not end the service
            assert "still-there" in again.stdout
            agreement = service.agreement
            # The provider's debit notes were checked against the agreed prices and accepted.
            await asyncio.sleep(3.0)
            assert golem._debited and not golem.rejected, golem.rejected
            await service.stop()
            assert not service.running and agreement is not None and agreement.ended_s is not None
            await service.stop()  # a repeat is a no-op

    asyncio.run(main())


def test_redundant_runs_take_the_majority_result_from_different_providers(net: Net) -> None:
    liar = net.providers[0].node_id

    async def answer(ctx: WorkContext, n: int) -> str:
        out = await hello(ctx, f"n{n}")
        # One provider gives wrong answers: the majority of three overrules it.
        return "forged" if ctx.provider_id == liar else out

    async def main() -> list[Any]:
        async with net.golem() as golem:
            return [t async for t in golem.execute_tasks(answer, list(range(1, 7)), payload=WasmPackage(net.package),
                                                         redundancy=3, max_workers=3, timeout_s=60)]  # fmt: skip

    tasks = asyncio.run(main())
    assert len(tasks) == 6
    for t in tasks:
        assert t.status == "done", t.error
        assert f"n{t.data}" in t.result and "forged" not in t.result  # the liar never wins
        assert len({p for p, _ in t.results}) == len(t.results) >= 2  # each run on another provider
        assert t.votes >= 2
        lies = [v for p, v in t.results if p == liar]
        assert lies in ([], ["forged"])
        if lies:  # its answer came before the task was decided, and two agreeing runs outvoted it
            assert len(t.results) == 3
    # Three runs of a task start at once and two agreeing ones decide it (a later answer is not
    # counted), so the liar's run may be cut short; over six tasks it runs somewhere.
    assert any(liar in t.tried for t in tasks)


def test_bad_inputs_are_refused_with_clear_errors(net: Net) -> None:
    with pytest.raises(ConfigurationError, match="budget must be more than 0"):
        net.golem(budget=0)
    with pytest.raises(ConfigurationError, match="app-key is required"):
        Golem(budget=1, app_key="", api_url=net.api_url)
    with pytest.raises(ConfigurationError, match="is not hash:sha3"):
        WasmPackage("http://example.org/prog.zip")
    with pytest.raises(ConfigurationError, match="cores must be"):
        Resources(cores=0)
    with pytest.raises(ConfigurationError, match="price cap"):
        Prices(cpu_per_hour=-1)

    async def unknown_key() -> None:
        async with Golem(budget=1, app_key="not-a-key", api_url=net.api_url, progress=False):
            pass

    with pytest.raises(ApiError, match="401"):
        asyncio.run(unknown_key())

    async def too_rich() -> None:
        async with net.golem(budget=10_000):
            pass

    with pytest.raises(ApiError, match="400"):
        asyncio.run(too_rich())

    async def bad_task_args() -> None:
        async with net.golem() as golem:
            with pytest.raises(ConfigurationError, match="redundancy"):
                [t async for t in golem.execute_tasks(hello, ["x"], payload=WasmPackage(net.package), redundancy=0)]
            with pytest.raises(ConfigurationError, match="payload must be a Payload"):
                [t async for t in golem.execute_tasks(hello, ["x"], payload="prog.zip")]  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="absolute"):
                Script().send_url("http://h/x", "relative/path")
            with pytest.raises(ConfigurationError, match="arguments must be strings"):
                Script().run("hello", 5)  # type: ignore[arg-type]

    asyncio.run(bad_task_args())

    async def leave_early() -> Golem:
        # Leaving the loop after the first task: closing the session still ends every agreement.
        async with net.golem() as golem:
            async for task in golem.execute_tasks(hello, ["a", "b", "c", "d"], payload=WasmPackage(net.package)):
                assert task.status == "done"
                break
        return golem

    golem = asyncio.run(asyncio.wait_for(leave_early(), 120))
    assert not golem.agreements and golem._ended and not golem.workers

    async def tiny_budget() -> Golem:
        # One wei set aside: the work runs, but its invoice asks more than is left, so it is refused and why.
        async with net.golem(budget="0.000000000000000001", invoice_wait_s=30) as golem:
            async for task in golem.execute_tasks(hello, ["x"], payload=WasmPackage(net.package)):
                assert task.status == "done"
        return golem

    golem = asyncio.run(asyncio.wait_for(tiny_budget(), 120))
    assert golem.rejected and all("the budget has 0.000000000000000001 GLM left" in why for _, why in golem.rejected)
    assert golem.spent == 0


def test_a_provider_killed_mid_run_has_its_tasks_retried_on_another(net: Net) -> None:
    victim = net.providers[0]
    started_on_victim = asyncio.Event()

    async def slow(ctx: WorkContext, n: int) -> str:
        if ctx.provider_id == victim.node_id:
            started_on_victim.set()
            script = ctx.script()
            script.run("spin", "100000000000")  # long enough to be killed in the middle
            await ctx.run(script)
        else:
            await asyncio.sleep(2.0)  # so that the victim, however slow to deploy, gets work too
        return await hello(ctx, f"t{n}")

    async def killer() -> None:
        await started_on_victim.wait()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(victim.kill)

    async def main() -> list[Any]:
        # The victim ranks first (a custom strategy), so it surely gets work.
        async with net.golem(invoice_wait_s=20.0, strategy=lambda o: float(o.provider_id == victim.node_id)) as golem:
            kill = asyncio.create_task(killer())
            tasks = [t async for t in golem.execute_tasks(slow, list(range(6)), payload=WasmPackage(net.package),
                                                          max_workers=3, timeout_s=15)]  # fmt: skip
            await asyncio.wait_for(kill, 5)
            assert victim.node_id in golem.blocked
            return tasks

    tasks = asyncio.run(main())
    assert all(t.status == "done" for t in tasks), [t.error for t in tasks]
    retried = [t for t in tasks if t.failures]
    assert retried and all(p == victim.node_id for t in retried for p, _ in t.failures)
    assert all(t.results[-1][0] != victim.node_id for t in retried)


def test_the_examples_run_against_the_testnet(net: Net, tmp_path: Path) -> None:
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "YAGNA_APPKEY": net.key,
        "YAGNA_API_URL": net.api_url, "YAGNA_PAYMENT_NETWORK": "local", "LOAM_DATA_DIR": str(net.requestor.data_dir),
    }  # fmt: skip

    def example(name: str, *args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / name), "--package", net.package, *args],
            input=stdin, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    assert "spent" in example("hello_wasm.py") and "from provider-" in example("hello_wasm.py")
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.txt")
        files[-1].write_text("a b c\n" * (i + 1))
    out = example("batch_files.py", *map(str, files), "--redundancy", "2", "--workers", "3")
    for i, f in enumerate(files):
        assert f"{f}: {i + 1} {3 * (i + 1)} {6 * (i + 1)}  (runs on 2 providers, 2 agreeing)" in out, out
    out = example("service.py", stdin="alice\nbob\n\n")
    assert "[stdout]" in out and "alice" in out and "bob" in out and "service stopped" in out, out


def test_a_vm_image_runs_tasks_in_containers_and_is_paid(testnet: Testnet, tmp_path: Path) -> None:
    import shutil

    from requestor import resolve_image
    from tests.images.support import FileServer, build_images, engine

    engine()
    images = build_images()
    www = tmp_path / "vm-www"
    www.mkdir()
    shutil.copy(images / "busybox.gvmi", www / "busybox.gvmi")
    repo_port = free_port()
    repo = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "image-repo", "--dir", str(www), "--port", str(repo_port)],
        cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    repo_url = f"http://127.0.0.1:{repo_port}"
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: (repo.kill(), repo.wait(10)))
        local = stack.enter_context(local_chain(tmp_path))
        server = stack.enter_context(FileServer(www))
        digest = server.package("busybox.gvmi").split(":")[2]
        wait_for("the image repository", lambda: urllib.request.urlopen(f"{repo_url}/v1/image/info?tag=busybox:latest"), 30)
        requestor = testnet.add("requestor", env=payment_env(local, LOAM_API__PORT=str(free_port())))
        testnet.add("vm-provider", env=provider_env(local, runtime="vm", LOAM_API__ENABLED="false"))
        payment_call(requestor, "fund", amount="100", timeout_s=90)
        wait_for("the vm offer", lambda: requestor.market("known_offers"), 60)
        api_url = json.loads((requestor.data_dir / "node.json").read_text())["api"]
        net_key = app_key(requestor)

        async def shout(ctx: WorkContext, word: str) -> str:
            script = ctx.script()
            out = script.run("/bin/sh", "-c", f"echo {word} | tr a-z A-Z")
            await ctx.run(script)
            return out.stdout.strip()

        async def main() -> tuple[list[Any], Golem]:
            # The image found by its tag in an image repository, as Golem's libraries do.
            payload = await resolve_image(repo_url, tag="busybox:latest")
            assert payload.runtime == "vm" and payload.task_package.startswith(f"hash:sha3:{digest}:{repo_url}/")
            assert payload.demand_properties()["golem.srv.comp.vm.package_format"] == "gvmkit-squash"
            with pytest.raises(ConfigurationError, match="not found"):
                await resolve_image(repo_url, tag="nope:1")
            async with Golem(budget="5", app_key=net_key, api_url=api_url, payment_network="local", progress=False,
                             data_dir=requestor.data_dir) as golem:  # fmt: skip
                tasks = [t async for t in golem.execute_tasks(shout, ["abc", "xyz"], payload=payload, timeout_s=120)]
            return tasks, golem

        tasks, golem = asyncio.run(main())
        assert sorted(t.result for t in tasks) == ["ABC", "XYZ"], [t.error for t in tasks]
        assert golem.spent > 0 and len(golem._invoiced) == 1
