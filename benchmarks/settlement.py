"""Settlement benchmark: gas per job and jobs settled per second, one transaction per job
against epoch batching, on the in-process EVM (py-evm) and on a real anvil node.

Both modes run the project's own contracts (``quackmesh.contracts``: DuckToken, Vault)
through ``quackmesh.ledger.chain.ChainClient``, which estimates gas, signs, sends and
raises on any receipt whose ``status`` is not 1. Gas is read from the receipts.

* **per-job** — settling each job on chain as it finishes. The Vault has no per-job
  payment function, so a job costs two transactions: ``Vault.record_jobs(epoch, [job],
  [job])`` (its life-cycle record: one JobPosted and one JobFinalized event) and one
  ``DuckToken.transfer(provider, price)`` paying the provider. Providers already hold DUCK
  (funded once at setup, not counted), so every transfer is the cheaper non-zero to
  non-zero balance write: the baseline errs in its own favour.
* **batched** (the hybrid QuackMesh ships) — jobs are paid off chain in the SQL ledger; per
  epoch the operator sends ``record_jobs`` with up to 256 jobs per call (the same two
  events per job) and one ``post_root(epoch, root, journal_head, total)`` whose root is
  ``quackmesh.ledger.merkle.build_tree`` over every provider's balance. Gas per job is the
  epoch's total gas over its jobs. The root read back from the vault must equal the tree's,
  one proof must verify on chain, and the epoch must have logged one JobFinalized per job.

Jobs per second is jobs over the wall clock of the on-chain part (estimate, sign, send,
receipt, one key, one transaction at a time); the tree is built off chain and timed apart.
On a public chain throughput is bounded by block gas instead, so the table also gives jobs
per block at ``--block-gas``. Job ids are ``keccak256`` of ``job_<hex>`` ids (32 non-zero
bytes of calldata each, the dearest case). Setup posts a first root (its one-off extra cost
is not a steady epoch's) and the chain clock moves ``EPOCH_GAP_S`` before each epoch, so
gas is the same on both backends. A provider cashing out with a voucher is counted in
neither mode and printed apart. Aim (issue 7): batching cuts gas per job ≥ 10×. Run with
``-h``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from _settlement_chain import (
    ANVIL,
    OPERATOR_KEY,
    PER_JOB_EPOCH,
    PRICE,
    Deployment,
    anvil_node,
    anvil_version,
    deploy,
    job_id,
    run_withdrawal,
)

AIM_RATIO = 10.0  # issue 7: batching should cut gas per job by at least this factor
MAX_BATCH = 256  # Vault.MAX_BATCH: elements per record_jobs array
EPOCH_GAP_S = 600  # chain time between two epochs' roots (the benchmark moves the clock)

MODE_NOTES = {
    "per-job": "per job: record_jobs(epoch, [job], [job]) + DuckToken.transfer(provider, price)",
    "batched": "per epoch: ceil(jobs/256) × record_jobs + 1 × post_root(Merkle root of balances)",
}


@dataclass(frozen=True)
class Config:
    per_job_jobs: int
    epoch_sizes: tuple[int, ...]
    providers: int
    block_gas: int
    backends: tuple[str, ...]


@dataclass(frozen=True)
class ModeResult:
    """One measured run: ``mode`` is ``per-job`` or ``batched`` (one epoch of ``jobs``)."""

    backend: str
    mode: str
    jobs: int
    transactions: int
    total_gas: int
    gas_per_job: float
    seconds: float  # wall clock of the on-chain part
    jobs_per_s: float
    jobs_per_block: float  # at --block-gas
    gas_by_call: dict[str, int]  # total gas per contract function
    tree_ms: float | None = None  # off-chain Merkle tree build (batched only)
    ratio: float | None = None  # per-job gas per job ÷ this gas per job (batched only)
    aim_met: bool | None = None


@dataclass
class BackendReport:
    backend: str
    node: str
    setup_s: float = 0.0
    results: list[ModeResult] = field(default_factory=list)
    withdrawal_gas: int | None = None  # one provider cashing out with a voucher (batched only)
    skipped: str | None = None


def chunks(items: Sequence[bytes], size: int = MAX_BATCH) -> list[list[bytes]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _result(
    backend: str,
    mode: str,
    jobs: int,
    receipts: list[tuple[str, Any]],
    seconds: float,
    block_gas: int,
    **extra: Any,
) -> ModeResult:
    gas_by_call: dict[str, int] = {}
    for name, receipt in receipts:
        gas_by_call[name] = gas_by_call.get(name, 0) + int(receipt["gasUsed"])
    total = sum(gas_by_call.values())
    per_job = total / jobs
    return ModeResult(
        backend=backend,
        mode=mode,
        jobs=jobs,
        transactions=len(receipts),
        total_gas=total,
        gas_per_job=round(per_job, 1),
        seconds=round(seconds, 4),
        jobs_per_s=round(jobs / seconds, 1),
        jobs_per_block=round(block_gas / per_job, 1),
        gas_by_call=gas_by_call,
        **extra,
    )


# --- the two modes ------------------------------------------------------------------------


def run_per_job(
    dep: Deployment, *, backend: str, jobs: int, first: int, block_gas: int
) -> ModeResult:
    client, vault, token = dep.client, dep.vault, dep.token
    receipts: list[tuple[str, Any]] = []
    before = client.call(token.functions.balanceOf(dep.providers[0]))
    start_block = int(client.w3.eth.block_number) + 1
    started = time.perf_counter()
    for n in range(first, first + jobs):
        jid = job_id(n)
        provider = dep.providers[n % len(dep.providers)]
        receipts.append(
            (
                "record_jobs",
                client.transact(vault.functions.record_jobs(PER_JOB_EPOCH, [jid], [jid])),
            )
        )
        receipts.append(("transfer", client.transact(token.functions.transfer(provider, PRICE))))
    seconds = time.perf_counter() - started
    paid = sum(1 for n in range(first, first + jobs) if n % len(dep.providers) == 0)
    after = client.call(token.functions.balanceOf(dep.providers[0]))
    if after - before != paid * PRICE:
        raise RuntimeError(f"provider 0 received {after - before}, expected {paid * PRICE}")
    _check_logged(dep, epoch=PER_JOB_EPOCH, jobs=jobs, from_block=start_block)
    return _result(backend, "per-job", jobs, receipts, seconds, block_gas)


def run_epoch(
    dep: Deployment, *, backend: str, epoch: int, jobs: int, first: int, block_gas: int
) -> ModeResult:
    from quackmesh.ledger.merkle import build_tree

    client, vault = dep.client, dep.vault
    ids = [job_id(n) for n in range(first, first + jobs)]
    # Off chain: the SQL ledger has paid each job's provider; the root commits to all balances.
    tree_started = time.perf_counter()
    for n in range(first, first + jobs):
        dep.balances[dep.providers[n % len(dep.providers)]] += PRICE
    tree = build_tree(dep.balances)
    tree_ms = (time.perf_counter() - tree_started) * 1000.0
    journal_head = job_id(-epoch)  # a stand-in for the ledger's journal hash at the cut
    dep.advance_clock(EPOCH_GAP_S)
    start_block = int(client.w3.eth.block_number) + 1
    receipts: list[tuple[str, Any]] = []
    started = time.perf_counter()
    for batch in chunks(ids):
        receipts.append(
            ("record_jobs", client.transact(vault.functions.record_jobs(epoch, batch, batch)))
        )
    receipts.append(
        (
            "post_root",
            client.transact(vault.functions.post_root(epoch, tree.root, journal_head, tree.total)),
        )
    )
    seconds = time.perf_counter() - started
    _check_epoch(dep, epoch=epoch, tree=tree, jobs=jobs, from_block=start_block)
    return _result(
        backend, "batched", jobs, receipts, seconds, block_gas, tree_ms=round(tree_ms, 2)
    )


def _check_epoch(dep: Deployment, *, epoch: int, tree: Any, jobs: int, from_block: int) -> None:
    """The vault holds the tree's root, a proof verifies on chain, every job was logged."""
    client, vault = dep.client, dep.vault
    root = bytes(client.call(vault.functions.roots(epoch))[0])
    if root != tree.root:
        raise RuntimeError(f"epoch {epoch}: the vault holds root {root.hex()}, not the tree's")
    account = dep.providers[0]
    proof = tree.proof(account)
    if not client.call(vault.functions.verify_balance(account, tree.balance(account), proof, root)):
        raise RuntimeError(f"epoch {epoch}: the vault refused a proof of the posted tree")
    _check_logged(dep, epoch=epoch, jobs=jobs, from_block=from_block)


def _check_logged(dep: Deployment, *, epoch: int, jobs: int, from_block: int) -> None:
    """One JobFinalized event per job since ``from_block``."""
    head = int(dep.client.w3.eth.block_number)
    logs = dep.client.logs(dep.vault.events.JobFinalized, from_block=from_block, to_block=head)
    logged = sum(1 for log in logs if int(log["args"]["epoch"]) == epoch)
    if logged != jobs:
        raise RuntimeError(f"epoch {epoch}: {logged} JobFinalized events, expected {jobs}")


def run_backend(client: Any, *, backend: str, node: str, config: Config) -> BackendReport:
    report = BackendReport(backend=backend, node=node)
    started = time.perf_counter()
    dep = deploy(client, config.providers)
    report.setup_s = round(time.perf_counter() - started, 2)
    per_job = run_per_job(
        dep, backend=backend, jobs=config.per_job_jobs, first=0, block_gas=config.block_gas
    )
    report.results.append(per_job)
    first = config.per_job_jobs
    for epoch, size in enumerate(config.epoch_sizes, start=PER_JOB_EPOCH + 1):
        result = run_epoch(
            dep, backend=backend, epoch=epoch, jobs=size, first=first, block_gas=config.block_gas
        )
        ratio = per_job.gas_per_job / result.gas_per_job
        report.results.append(replace(result, ratio=round(ratio, 2), aim_met=ratio >= AIM_RATIO))
        first += size
    report.withdrawal_gas = run_withdrawal(dep, epoch=PER_JOB_EPOCH + len(config.epoch_sizes))
    return report


# --- backends -----------------------------------------------------------------------------


def run_all(config: Config, *, anvil: Path) -> list[BackendReport]:
    from quackmesh.ledger.chain import ChainClient

    reports: list[BackendReport] = []
    for backend in config.backends:
        if backend == "local":
            client = ChainClient.local(OPERATOR_KEY)
            vm = type(client.w3.provider.ethereum_tester.backend.chain.get_vm()).__name__
            node = f"in-process py-evm ({vm}) via eth-tester"
            reports.append(run_backend(client, backend=backend, node=node, config=config))
        elif not anvil.exists():
            reports.append(
                BackendReport(backend=backend, node="anvil", skipped=f"no anvil binary at {anvil}")
            )
        else:
            with anvil_node(anvil) as url:
                client = ChainClient.connect(url, OPERATOR_KEY)
                node = f"{anvil_version(anvil)}, automine, JSON-RPC over loopback HTTP"
                reports.append(run_backend(client, backend=backend, node=node, config=config))
    return reports


# --- output -------------------------------------------------------------------------------


def _fmt_int(value: float) -> str:
    return f"{value:,.0f}"


def print_report(config: Config, reports: list[BackendReport], elapsed: float) -> None:
    print("Settlement: one transaction per job versus epoch batching")
    for mode, note in MODE_NOTES.items():
        print(f"  {mode:8s} {note}")
    print(
        f"  {config.providers} providers (each pre-funded: transfers are non-zero writes); "
        f"price {PRICE} micro-DUCK; jobs/s = jobs ÷ on-chain wall clock, one key, sequential"
    )
    header = (
        f"{'backend':8s} {'mode':8s} {'jobs':>5s} {'txs':>4s} {'total gas':>11s} "
        f"{'gas/job':>8s} {'jobs/s':>8s} {'jobs/block':>10s} {'tree ms':>8s} {'ratio':>7s}  aim"
    )
    for report in reports:
        print()
        if report.skipped:
            print(f"{report.backend}: skipped ({report.skipped})")
            continue
        print(f"{report.backend}: {report.node} (setup {report.setup_s:.1f} s)")
        print(header)
        for r in report.results:
            tree = "" if r.tree_ms is None else f"{r.tree_ms:.1f}"
            ratio = "" if r.ratio is None else f"{r.ratio:.1f}×"
            aim = "" if r.aim_met is None else ("met" if r.aim_met else "missed")
            print(
                f"{r.backend:8s} {r.mode:8s} {r.jobs:5d} {r.transactions:4d} "
                f"{_fmt_int(r.total_gas):>11s} {_fmt_int(r.gas_per_job):>8s} "
                f"{r.jobs_per_s:8.1f} {_fmt_int(r.jobs_per_block):>10s} {tree:>8s} "
                f"{ratio:>7s}  {aim}"
            )
        per_job = report.results[0]
        calls = ", ".join(
            f"{name} {_fmt_int(gas / per_job.jobs)}" for name, gas in per_job.gas_by_call.items()
        )
        print(f"  per-job gas per job by call: {calls}")
        print(
            f"  not in either mode: a provider cashing out its off-chain balance with one voucher "
            f"withdrawal costs {report.withdrawal_gas:,} gas, spread over the jobs it covers"
        )
    print()
    for line in aim_lines(reports):
        print(line)
    print(f"jobs/block at {config.block_gas:,} gas per block; done in {elapsed:.1f} s")


def aim_lines(reports: list[BackendReport]) -> list[str]:
    lines = []
    for report in reports:
        batched = [r for r in report.results if r.mode == "batched"]
        if not batched:
            continue
        met = [r.jobs for r in batched if r.aim_met]
        missed = [r.jobs for r in batched if not r.aim_met]
        verdict = "met" if not missed else ("missed" if not met else "partly met")
        detail = f"met at {met or 'none'}" + (f", missed at {missed}" if missed else "")
        lines.append(
            f"aim on {report.backend}: batching cuts gas per job ≥ {AIM_RATIO:g}×: "
            f"{verdict} (epoch sizes {detail})"
        )
    return lines


def to_json(config: Config, reports: list[BackendReport]) -> dict[str, Any]:
    return {
        "benchmark": "settlement",
        "config": asdict(config),
        "modes": MODE_NOTES,
        "price": PRICE,
        "aim_ratio": AIM_RATIO,
        "backends": {
            r.backend: {
                "node": r.node,
                "skipped": r.skipped,
                "setup_s": r.setup_s,
                "withdrawal_gas": r.withdrawal_gas,
                "results": [asdict(x) for x in r.results],
            }
            for r in reports
        },
    }


# --- command line -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--backend", choices=("local", "anvil", "both"), default="both",
        help="in-process EVM, anvil, or both (default); a missing anvil binary is skipped",
    )  # fmt: skip
    p.add_argument("--per-job", type=int, help="jobs settled one at a time (64; quick 8)")
    p.add_argument(
        "--epochs", help="batched epoch sizes, comma-separated (64,256,1024; quick 16,300)"
    )
    p.add_argument("--providers", type=int, help="provider balances in the tree (64; quick 4)")
    p.add_argument(
        "--block-gas", type=int, default=30_000_000, help="gas per block for jobs/block (30M)"
    )
    p.add_argument("--anvil", type=Path, default=ANVIL, help=f"anvil binary ({ANVIL})")
    p.add_argument("--quick", action="store_true", help="smoke size for the tests")
    p.add_argument("--json", action="store_true", help="print one JSON line with every figure")
    args = p.parse_args(argv)
    if args.per_job is None:
        args.per_job = 8 if args.quick else 64
    if args.providers is None:
        args.providers = 4 if args.quick else 64
    epochs = args.epochs or ("16,300" if args.quick else "64,256,1024")
    try:
        args.epoch_sizes = tuple(int(x) for x in epochs.split(",") if x.strip())
    except ValueError:
        p.error("--epochs must be comma-separated integers, e.g. 64,256,1024")
    if not args.epoch_sizes or min(args.epoch_sizes) < 1:
        p.error("--epochs needs at least one size, each >= 1")
    if args.per_job < 1 or args.providers < 1 or args.block_gas < 1:
        p.error("--per-job, --providers and --block-gas must be >= 1")
    if args.backend == "anvil" and not args.anvil.exists():
        p.error(f"no anvil binary at {args.anvil} (run `npm install`)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(
        per_job_jobs=args.per_job,
        epoch_sizes=args.epoch_sizes,
        providers=args.providers,
        block_gas=args.block_gas,
        backends=("local", "anvil") if args.backend == "both" else (args.backend,),
    )
    started = time.perf_counter()
    reports = run_all(config, anvil=args.anvil)
    print_report(config, reports, time.perf_counter() - started)
    if args.json:
        print(json.dumps(to_json(config, reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
