"""Many small tasks across provider nodes, against running the same module directly.

    python bench/tasks.py --providers 4 --tasks 200 --runtime wasmtime

A requestor node negotiates one agreement and one activity with each provider, deploys the
package, then runs the tasks (one `run` command each), one at a time per provider, all
providers at once. The same module runs as many times directly with wasmtime in one
process. The last line printed is one JSON object with the figures: overhead_ms_per_task
compares the whole run with the direct runs (wall time per task above a direct run);
latency_overhead_ms compares one task's round trip with one direct run.

    python bench/tasks.py --providers 4 --tasks 200 --via rest

--via rest also runs the same tasks a second time, through the node's REST API and the
requestor library (`Golem.execute_tasks`, paid on a local anvil chain), on the same
providers, after the direct control-channel run; the JSON then has the REST figures beside
the direct ones (`overhead_ms_per_task_rest`, `rest_added_ms_per_task`, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import http.server
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exeunits.wasm.package import make_package  # noqa: E402
from exeunits.wasm.runtime import WasmRunner  # noqa: E402
from protocol.control import ControlCall  # noqa: E402
from tests.integration.harness import NodeProcess, Testnet, market_call, wait_for  # noqa: E402
from tests.wasm_programs import build_wasm_programs  # noqa: E402

PLATFORM = "erc20-holesky-tglm"
LOCAL_PLATFORM = "erc20-local-tglm"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def _serve(root: Path) -> str:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def _direct_wasm(wasm: Path, tasks: int, base: Path) -> list[float]:
    """The same module, the same number of runs, in this process."""
    runner = WasmRunner(base / "direct-cache")
    times = []
    for i in range(tasks + 5):
        t0 = time.perf_counter()
        outcome = runner.run(wasm, ["hello", str(i)], {}, {}, base / "d.out", base / "d.err")
        assert outcome.ok, outcome.error
        if i >= 5:
            times.append((time.perf_counter() - t0) * 1000)
    return times


def _direct_docker(digest: str, tasks: int) -> tuple[list[float], float]:
    """`docker exec` of the task's command in a running container, and a bare `docker run` (median ms)."""
    import docker

    from exeunits.vm.image import image_tag

    client = docker.from_env()
    tag = image_tag(digest)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        client.containers.run(tag, ["/bin/true"], network_mode="none", remove=True)
        runs.append((time.perf_counter() - t0) * 1000)
    container = client.containers.run(tag, ["/bin/sh", "-c", "sleep 600"], network_mode="none", detach=True)
    try:
        execs = []
        for i in range(min(tasks, 50)):
            t0 = time.perf_counter()
            container.exec_run(["/bin/echo", str(i)])
            execs.append((time.perf_counter() - t0) * 1000)
    finally:
        container.remove(force=True)
    return execs, statistics.median(runs)


def _activity(node: NodeProcess, method: str, **args: Any) -> Any:
    return node.call(ControlCall("activity", method, args), timeout_s=120).value


def _agree(requestor: NodeProcess, provider_id: str, props: dict[str, Any], runtime: str) -> str:
    sub = market_call(requestor, "subscribe_demand", {"properties": props, "constraints": f"(golem.runtime.name={runtime})"})
    try:
        initial = wait_for(
            "the provider's Initial proposal",
            lambda: [e for e in market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 0.5, "max_events": 100})
                     if e["proposal"]["issuer_id"] == provider_id],
            30,
        )
        market_call(requestor, "counter_proposal", {
            "sub_id": sub, "proposal_id": initial[0]["proposal"]["proposal_id"], "properties": props, "constraints": "()",
        })
        draft = wait_for("a Draft", lambda: market_call(requestor, "collect", {"sub_id": sub, "timeout_s": 0.5}), 30)
        agreement_id = market_call(requestor, "create_agreement", {
            "proposal_id": draft[0]["proposal"]["proposal_id"], "valid_to_ms": int(time.time() * 1000) + 3_600_000,
        })
        market_call(requestor, "confirm_agreement", {"agreement_id": agreement_id})
        state = market_call(requestor, "wait_agreement", {"agreement_id": agreement_id, "timeout_s": 20})
        assert state == "Approved", state
        return agreement_id
    finally:
        market_call(requestor, "unsubscribe", {"sub_id": sub})


def _cpu_s(pid: int) -> float:
    """user + system cpu seconds of a process so far."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _app_key(node: NodeProcess) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "app-key", "create", "--data-dir", str(node.data_dir), "bench"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _rest_run(
    requestor: NodeProcess, task_package: str, runtime: str, entry: str, providers: int, tasks: int, warmup: int,
    pipeline: int = 1,
) -> tuple[list[float], float, tuple[float, float]]:
    """The same tasks through the REST API with the requestor library.

    Returns per-task ms, the wall s of the measured window, and the cpu s the bench process
    and the requestor node spent in that window.
    """
    assert requestor.proc is not None
    node_pid = requestor.proc.pid
    from requestor import Golem, VmImage, WasmPackage, WorkContext

    api_url = json.loads((requestor.data_dir / "node.json").read_text())["api"]
    key = _app_key(requestor)
    payload = WasmPackage(task_package) if runtime == "wasmtime" else VmImage(task_package)

    async def main() -> tuple[list[float], float, tuple[float, float]]:
        ready = asyncio.Event()
        warm: set[str] = set()
        latencies: list[float] = []
        window: list[float] = []
        cpu: list[tuple[float, float]] = []

        async def work(ctx: WorkContext, item: tuple[str, int]) -> None:
            kind, i = item
            if kind == "warm":
                # Warm-up tasks per provider (each worker holds its own until all are warm).
                for j in range(warmup):
                    script = ctx.script()
                    script.run(entry, str(j))
                    await ctx.run(script)
                warm.add(ctx.provider_id)
                if len(warm) >= providers and not ready.is_set():
                    window.append(time.perf_counter())
                    cpu.append((time.process_time(), _cpu_s(node_pid)))
                    ready.set()
                await ready.wait()
                return
            await ready.wait()
            t0 = time.perf_counter()
            script = ctx.script()
            script.run(entry, str(i))
            await ctx.run(script)
            t1 = time.perf_counter()
            latencies.append((t1 - t0) * 1000)
            window.append(t1)
            if len(latencies) == tasks:
                cpu.append((time.process_time(), _cpu_s(node_pid)))

        # Each worker holds `pipeline` warm-up tasks until all are warm: so each provider gets its share.
        data = [("warm", i) for i in range(providers * pipeline)] + [("task", i) for i in range(tasks)]
        async with Golem(budget="50", app_key=key, api_url=api_url, payment_network="local",
                         data_dir=requestor.data_dir, progress=False, invoice_wait_s=30) as golem:  # fmt: skip
            async for task in golem.execute_tasks(work, data, payload=payload, max_workers=providers, timeout_s=300,
                                                  pipeline=pipeline):  # fmt: skip
                assert task.status == "done", task.error
        return latencies, max(window) - min(window), (cpu[-1][0] - cpu[0][0], cpu[-1][1] - cpu[0][1])

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runtime", choices=["wasmtime", "vm"], default="wasmtime")
    parser.add_argument("--warmup", type=int, default=2, help="tasks per provider before measuring")
    parser.add_argument("--via", choices=["control", "rest"], default="control",
                        help="rest: also run the tasks through the REST API and the requestor library")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="with --via rest: tasks in flight per activity (execute_tasks' pipeline)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="loam-bench-tasks-"))
    www = base / "www"
    www.mkdir()
    if args.runtime == "wasmtime":
        build = build_wasm_programs()
        make_package(www / "bench.zip", {"hello": build / "hello.wasm"}, [("rw", "output")])
        package_file, entry = "bench.zip", "hello"
        direct_ms = _direct_wasm(build / "hello.wasm", args.tasks, base)
    else:
        from tests.images.support import build_images

        shutil.copy(build_images() / "busybox.gvmi", www / "busybox.gvmi")
        package_file, entry = "busybox.gvmi", "/bin/echo"
        direct_ms = []  # filled below: `docker exec` of the same command in a running container
    digest = hashlib.sha3_224((www / package_file).read_bytes()).hexdigest()
    task_package = f"hash:sha3:{digest}:{_serve(www)}/{package_file}"

    net = Testnet(base / "nodes")
    stack = contextlib.ExitStack()
    rest: dict[str, Any] = {}
    try:
        requestor_env: dict[str, str] = {}
        seller_env = {"LOAM_PROVIDER__ENABLED": "true", "LOAM_PROVIDER__RUNTIME": args.runtime}
        platform = PLATFORM
        if args.via == "rest":
            # The library pays for its work: a local chain, and the nodes paying and paid on it.
            from tests.integration.harness import free_port
            from tests.integration.payment_support import local_chain, payment_env, provider_env

            local = stack.enter_context(local_chain(base))
            requestor_env = payment_env(local, LOAM_API__PORT=str(free_port()))
            seller_env = provider_env(local, runtime=args.runtime, LOAM_API__ENABLED="false")
            platform = LOCAL_PLATFORM
        requestor = net.add("requestor", fast_timers=False, env=requestor_env)
        providers = [net.add(f"provider-{i}", fast_timers=False, env=seller_env) for i in range(args.providers)]
        wait_for("every offer", lambda: len(market_call(requestor, "known_offers", {})) >= args.providers, 60, 0.5)
        props = {
            "golem.node.debug.subnet": "public",
            "golem.srv.comp.expiration": int(time.time() * 1000) + 3_600_000,
            f"golem.com.payment.platform.{platform}.address": requestor.node_id,
            "golem.srv.comp.task_package": task_package,
        }
        activities = []
        agreements = []
        start_ms = []
        for provider in providers:
            agreement_id = _agree(requestor, provider.node_id, props, args.runtime)
            agreements.append(agreement_id)
            activity_id = _activity(requestor, "create", agreement_id=agreement_id)["activity_id"]
            t0 = time.perf_counter()
            batch = _activity(requestor, "exec", activity_id=activity_id, script=[{"deploy": {}}, {"start": {}}])
            results = _activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=120)
            start_ms.append((time.perf_counter() - t0) * 1000)
            assert [r["result"] for r in results] == ["Ok", "Ok"], results
            activities.append(activity_id)

        def task(activity_id: str, i: int) -> float:
            t0 = time.perf_counter()
            batch = _activity(requestor, "exec", activity_id=activity_id, script=[{"run": {"entry_point": entry, "args": [str(i)]}}])
            results = _activity(requestor, "results", activity_id=activity_id, batch_id=batch, timeout_s=60)
            assert results and results[-1]["result"] == "Ok", results
            return (time.perf_counter() - t0) * 1000

        def worker(activity_id: str, count: int, warm: int) -> list[float]:
            for i in range(warm):
                task(activity_id, i)
            return [task(activity_id, i) for i in range(count)]

        per = [args.tasks // len(activities) + (1 if i < args.tasks % len(activities) else 0) for i in range(len(activities))]
        # Warm-up first, on every provider, so the measured window starts with caches filled.
        with ThreadPoolExecutor(len(activities)) as pool:
            list(pool.map(lambda a: worker(a, 0, args.warmup), activities))
        assert requestor.proc is not None
        cpu0 = (time.process_time(), _cpu_s(requestor.proc.pid))
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(activities)) as pool:
            latencies = [ms for chunk in pool.map(lambda ac: worker(ac[0], ac[1], 0), zip(activities, per)) for ms in chunk]
        wall_s = time.perf_counter() - t0
        direct_cpu = (time.process_time() - cpu0[0], _cpu_s(requestor.proc.pid) - cpu0[1])
        for activity_id in activities:
            _activity(requestor, "destroy", activity_id=activity_id)
        if args.via == "rest":
            for agreement_id in agreements:
                requestor.market("terminate_agreement", agreement_id=agreement_id, reason={"message": "direct run done"})
            from tests.integration.payment_support import payment_call

            payment_call(requestor, "fund", amount="100", timeout_s=90)
            rest_ms, rest_wall_s, rest_cpu = _rest_run(
                requestor, task_package, args.runtime, entry, args.providers, args.tasks, args.warmup, args.pipeline
            )  # fmt: skip
            rest = {"latencies": rest_ms, "wall_s": rest_wall_s, "cpu": rest_cpu, "direct_cpu": direct_cpu}
    finally:
        net.stop_all()
        stack.close()
    extra: dict[str, Any] = {}
    if args.runtime == "vm":
        direct_ms, docker_run_ms = _direct_docker(digest, args.tasks)
        # The first deploy imports the image; the later ones find it cached, as a bare
        # `docker run` of an image already on the machine does.
        cached_start = statistics.median(start_ms[1:] or start_ms)
        extra = {
            "container_start_ms": round(cached_start, 1),
            "first_deploy_ms": round(start_ms[0], 1),
            "docker_run_ms": round(docker_run_ms, 1),
            "start_vs_docker_run": round(cached_start / docker_run_ms, 2),
        }
    direct_mean = statistics.fmean(direct_ms)
    task_mean = statistics.fmean(latencies)
    result = {
        "bench": "tasks",
        "runtime": args.runtime,
        "providers": args.providers,
        "tasks": len(latencies),
        "wall_s": round(wall_s, 2),
        "tasks_per_s": round(len(latencies) / wall_s, 1),
        "task_ms_p50": round(statistics.median(latencies), 1),
        "task_ms_mean": round(task_mean, 1),
        "direct_run_ms_mean": round(direct_mean, 2),
        # The run as a whole against the same number of direct runs, per task: what the
        # network, market and activity layers add to the work.
        "overhead_ms_per_task": round((wall_s * 1000 - direct_mean * len(latencies)) / len(latencies), 2),
        # One task's round trip (exec → results) against one direct run; with several
        # providers at once on a small machine this includes waiting for the cpu.
        "latency_overhead_ms": round(task_mean - direct_mean, 1),
        **extra,
    }
    if rest:
        n, rest_wall = len(rest["latencies"]), rest["wall_s"]
        rest_overhead = (rest_wall * 1000 - direct_mean * n) / n
        result.update({
            "via": "rest",
            "pipeline": args.pipeline,
            "wall_s_rest": round(rest_wall, 2),
            "tasks_per_s_rest": round(n / rest_wall, 1),
            "task_ms_p50_rest": round(statistics.median(rest["latencies"]), 1),
            "task_ms_mean_rest": round(statistics.fmean(rest["latencies"]), 1),
            "overhead_ms_per_task_rest": round(rest_overhead, 2),
            "latency_overhead_ms_rest": round(statistics.fmean(rest["latencies"]) - direct_mean, 1),
            # What the HTTP layer and the library add per task, over the control-channel path.
            "rest_added_ms_per_task": round(rest_overhead - result["overhead_ms_per_task"], 2),
            "rest_added_latency_ms": round(statistics.fmean(rest["latencies"]) - task_mean, 1),
            # cpu per task in the measured windows: the client (this process) and the requestor node.
            "client_cpu_ms_per_task": round(rest["direct_cpu"][0] * 1000 / len(latencies), 2),
            "client_cpu_ms_per_task_rest": round(rest["cpu"][0] * 1000 / n, 2),
            "node_cpu_ms_per_task": round(rest["direct_cpu"][1] * 1000 / len(latencies), 2),
            "node_cpu_ms_per_task_rest": round(rest["cpu"][1] * 1000 / n, 2),
        })  # fmt: skip
    print(
        f"{result['tasks']} tasks on {args.providers} providers in {result['wall_s']} s "
        f"({result['tasks_per_s']}/s); a task takes {result['task_ms_mean']} ms against "
        f"{result['direct_run_ms_mean']} ms run directly",
        file=sys.stderr,
    )
    if rest:
        print(
            f"through the REST API and the requestor library: {result['wall_s_rest']} s ({result['tasks_per_s_rest']}/s); "
            f"a task takes {result['task_ms_mean_rest']} ms; {result['rest_added_ms_per_task']} ms per task more than the "
            "control channel",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
