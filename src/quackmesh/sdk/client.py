"""QuackMesh SDK: every request is signed with the caller's wallet (see core.signing).

``Client`` is synchronous, ``AsyncClient`` the same API with ``await``. Both accept an
``httpx`` transport, so tests can run them in-process against the ASGI app::

    client = Client("http://127.0.0.1:8787", wallet)
    job = client.submit("ml.kmeans", data="iris.csv", params={"n_clusters": 3}, max_price=10)
    job = client.wait(job.id)
    print(client.result(job.id).result["inertia"])

Errors come back as the classes of :mod:`quackmesh.core.errors` (``InsufficientBalance``,
``ValidationFailed`` …) built from the coordinator's problem+json body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from quackmesh.core.chain_schemas import (
    ChainAccountPublic,
    ChainEpochListPublic,
    ChainEpochPublic,
    ChainInfoPublic,
    ChainRootPublic,
    DepositListPublic,
    DepositPublic,
    PermitDepositCreate,
    ProofPublic,
    RelayPublic,
    TokenFaucetCreate,
    VoucherListPublic,
    VoucherPublic,
    WithdrawalCreate,
)
from quackmesh.core.errors import QuackMeshError, RateLimited, error_class_for_code
from quackmesh.core.inference_schemas import (
    ApiKeyCreate,
    ApiKeyCreatedPublic,
    ApiKeyListPublic,
    ApiKeyPublic,
    InferenceChunk,
    InferenceLease,
    InferenceWork,
)
from quackmesh.core.schemas import (
    BalancePublic,
    BlobPublic,
    DisputeCreate,
    DisputePublic,
    ExplainPublic,
    FaucetCreate,
    FlRunPublic,
    HeartbeatCreate,
    HeartbeatPublic,
    JobCreate,
    JobListPublic,
    JobPublic,
    JobResultPublic,
    JobState,
    LeaseCreate,
    LeasePublic,
    LedgerCheckPublic,
    MarketNodesPublic,
    NodePublic,
    NodeRegister,
    ReleaseCreate,
    RentalCreate,
    RentalListPublic,
    RentalPublic,
    RentalQuotePublic,
    SlashListPublic,
    SlashPublic,
    StakeCreate,
    StakePublic,
    TaskReport,
    TaskReportPublic,
    Verification,
)
from quackmesh.core.wallet import Wallet
from quackmesh.core.webhook_schemas import (
    DeliveryListPublic,
    DeliveryPublic,
    DeliveryState,
    WebhookCreate,
    WebhookCreatedPublic,
    WebhookListPublic,
    WebhookPublic,
)
from quackmesh.ledger.vouchers import sign_permit

__all__ = ["AsyncClient", "Client", "HttpError", "SignedAuth"]

M = TypeVar("M", bound=BaseModel)
TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


class HttpError(QuackMeshError):
    """A non-problem HTTP error, or a problem code this SDK does not know."""

    def __init__(self, detail: str, *, status: int, **context: Any) -> None:
        super().__init__(detail, **context)
        self.http_status = status


class SignedAuth(httpx.Auth):
    """httpx auth flow that signs each request (path with query, body sha256)."""

    requires_request_body = True

    def __init__(self, wallet: Wallet) -> None:
        self.wallet = wallet

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "x-quackmesh-signature" not in request.headers:  # pre-signed streamed uploads
            headers = self.wallet.sign_request(
                method=request.method, path=request.url.raw_path.decode(), body=request.content
            )
            request.headers.update(headers.as_dict())
        yield request


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        cls = error_class_for_code(body["code"])
        context = {
            k: v for k, v in body.items() if k not in {"type", "title", "status", "code", "detail"}
        }
        detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
        if cls is RateLimited:
            retry = int(response.headers.get("retry-after", context.pop("retry_after", 1)))
            context.pop("retry_after", None)
            raise RateLimited(detail, retry_after=retry, **context)
        if cls is QuackMeshError:
            raise HttpError(detail, status=response.status_code, **context)
        raise cls(detail, **context)
    raise HttpError(
        f"HTTP {response.status_code}: {response.text[:200]}", status=response.status_code
    )


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    timeout: float | None = None


def _body(model: BaseModel) -> Any:
    return model.model_dump(mode="json")


def _event_filters(**filters: str | None) -> dict[str, Any]:
    return {k: v for k, v in filters.items() if v is not None}


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from iter(lambda: fh.read(1 << 20), b"")


class _Api:
    """Builds the calls; the two clients only differ in how they send them."""

    @staticmethod
    def job_create(
        kind: str,
        inputs: dict[str, str],
        params: dict[str, Any] | None,
        max_price: int,
        max_attempts: int,
        timeout_s: float,
        memory_mb: int,
        verification: Verification | None = None,
        rental_id: str | None = None,
    ) -> _Call:
        body = JobCreate(
            kind=kind,
            inputs=inputs,
            params=dict(params or {}),
            max_price=max_price,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            verification=verification or Verification(),
            rental_id=rental_id,
        )
        return _Call("POST", "/v1/jobs", json=_body(body))


class Client:
    """Synchronous QuackMesh client (clients and provider nodes)."""

    def __init__(
        self,
        coordinator: str,
        wallet: Wallet,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        """``max_retries``: how often a 429 is retried after its ``Retry-After`` wait."""
        self.wallet = wallet
        self.max_retries = max_retries
        self.address = wallet.address
        self._http = httpx.Client(
            base_url=coordinator, auth=SignedAuth(wallet), transport=transport, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            response = self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                timeout=call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
            if response.status_code != 429 or attempt == self.max_retries:
                break
            time.sleep(min(30.0, float(response.headers.get("retry-after", "1"))))
        raise_for_problem(response)
        return response

    def _model(self, call: _Call, model: type[M]) -> M:
        return model.model_validate(self._send(call).json())

    # --- client side -------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self._http.get("/healthz").json()
        return data

    def upload(self, data: Path | str | bytes) -> BlobPublic:
        """Upload a file (streamed) or bytes; returns its sha256 and size."""
        if isinstance(data, bytes):
            response = self._http.post(
                "/v1/blobs", content=data, headers={"content-type": "application/octet-stream"}
            )
        else:
            path = Path(data)
            signed = self.wallet.sign_request(
                method="POST", path="/v1/blobs", body_sha256=_sha256_file(path)
            )
            response = self._http.post(
                "/v1/blobs",
                content=_file_chunks(path),
                headers={**signed.as_dict(), "content-type": "application/octet-stream"},
            )
        raise_for_problem(response)
        return BlobPublic.model_validate(response.json())

    def submit(
        self,
        kind: str,
        *,
        data: Path | str | bytes | None = None,
        inputs: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        max_price: int,
        max_attempts: int = 3,
        timeout_s: float = 600.0,
        memory_mb: int = 2048,
        verification: Verification | None = None,
        rental_id: str | None = None,
    ) -> JobPublic:
        """Upload ``data`` (as input ``data``) unless ``inputs`` names blobs, then submit."""
        named = dict(inputs or {})
        if data is not None:
            named["data"] = self.upload(data).sha256
        call = _Api.job_create(
            kind,
            named,
            params,
            max_price,
            max_attempts,
            timeout_s,
            memory_mb,
            verification,
            rental_id,
        )
        return self._model(call, JobPublic)

    def status(self, job_id: str) -> JobPublic:
        return self._model(_Call("GET", f"/v1/jobs/{job_id}"), JobPublic)

    def list_jobs(self, *, state: JobState | None = None, limit: int = 50) -> list[JobPublic]:
        params: dict[str, Any] = {"limit": limit} | ({"state": state.value} if state else {})
        return self._model(_Call("GET", "/v1/jobs", params=params), JobListPublic).jobs

    def wait(
        self,
        job_id: str,
        *,
        timeout: float = 600.0,
        poll: float = 0.5,
        on_update: Callable[[JobPublic], None] | None = None,
    ) -> JobPublic:
        """Poll until the job is finished (or ``TimeoutError`` after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if on_update is not None:
                on_update(job)
            if job.state in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout}s")
            time.sleep(poll)

    def result(self, job_id: str) -> JobResultPublic:
        return self._model(_Call("GET", f"/v1/jobs/{job_id}/result"), JobResultPublic)

    def cancel(self, job_id: str) -> JobPublic:
        return self._model(_Call("POST", f"/v1/jobs/{job_id}/cancel", json={}), JobPublic)

    def balance(self) -> BalancePublic:
        return self._model(_Call("GET", "/v1/balance"), BalancePublic)

    def faucet(self, amount: int) -> BalancePublic:
        return self._model(
            _Call("POST", "/v1/faucet", json=_body(FaucetCreate(amount=amount))), BalancePublic
        )

    def ledger_check(self) -> LedgerCheckPublic:
        return self._model(_Call("GET", "/v1/ledger/check"), LedgerCheckPublic)

    # --- on-chain settlement (chain mode) -------------------------------------------------
    def chain_info(self) -> ChainInfoPublic:
        """The chain and contracts the coordinator settles against (404 ``chain_disabled``
        when it runs without one)."""
        return self._model(_Call("GET", "/v1/chain"), ChainInfoPublic)

    def chain_epochs(self, *, limit: int = 20) -> list[ChainEpochPublic]:
        call = _Call("GET", "/v1/chain/epochs", params={"limit": limit})
        return self._model(call, ChainEpochListPublic).epochs

    def chain_root(self, epoch: int) -> ChainRootPublic:
        """``Vault.roots(epoch)`` as the coordinator reads it from the chain (trusts it)."""
        return self._model(_Call("GET", f"/v1/chain/roots/{epoch}"), ChainRootPublic)

    def chain_account(self, address: str | None = None) -> ChainAccountPublic:
        """Token balance, permit nonce and gas of ``address`` (this wallet by default)."""
        path = f"/v1/chain/accounts/{address or self.address}"
        return self._model(_Call("GET", path), ChainAccountPublic)

    def balance_proof(self, address: str | None = None, *, epoch: int | None = None) -> ProofPublic:
        """The Merkle proof of a wallet balance in a posted epoch (the latest by default)."""
        params = {"epoch": epoch} if epoch is not None else None
        path = f"/v1/chain/proof/{address or self.address}"
        return self._model(_Call("GET", path, params=params), ProofPublic)

    def deposits(self, *, limit: int = 100) -> list[DepositPublic]:
        call = _Call("GET", "/v1/chain/deposits", params={"limit": limit})
        return self._model(call, DepositListPublic).deposits

    def deposit(self, amount: int, *, deadline_s: int = 3600) -> RelayPublic:
        """Deposit ``amount`` DUCK tokens from this wallet's chain address, gasless: sign
        an EIP-2612 permit for the Vault and have the coordinator relay it. The credit
        follows the deposit's confirmations (``credited`` says whether it already did)."""
        info = self.chain_info()
        account = self.chain_account()
        permit = sign_permit(
            self.wallet.private_key,
            token=info.token,
            chain_id=info.chain_id,
            spender=info.vault,
            value=amount,
            nonce=account.permit_nonce,
            deadline=int(time.time()) + deadline_s,
        )
        body = PermitDepositCreate(
            amount=amount, deadline=permit.deadline, v=permit.v, r=permit.r, s=permit.s
        )
        return self._model(_Call("POST", "/v1/chain/deposits", json=_body(body)), RelayPublic)

    def withdraw(self, amount: int, *, relay: bool = True) -> VoucherPublic:
        """Move ``amount`` out of the wallet into a signed voucher. With ``relay`` the
        coordinator submits it (the tokens go to this wallet's address); otherwise pass
        ``voucher`` fields to ``Vault.withdraw`` yourself before ``expiry``."""
        body = WithdrawalCreate(amount=amount, relay=relay)
        return self._model(_Call("POST", "/v1/chain/withdrawals", json=_body(body)), VoucherPublic)

    def withdrawals(self, *, limit: int = 100) -> list[VoucherPublic]:
        call = _Call("GET", "/v1/chain/withdrawals", params={"limit": limit})
        return self._model(call, VoucherListPublic).vouchers

    def token_faucet(self, amount: int) -> RelayPublic:
        """Development only: mint DUCK tokens (and gas) to this wallet's chain address."""
        body = TokenFaucetCreate(amount=amount)
        return self._model(_Call("POST", "/v1/chain/faucet", json=_body(body)), RelayPublic)

    def ledger_journal(self, *, after: int = 0, limit: int = 1000) -> str:
        """Journal transactions after seq ``after`` as JSON Lines (ledger.read_jsonl reads it)."""
        call = _Call("GET", "/v1/ledger/journal", params={"after": after, "limit": limit})
        return self._send(call).text

    # --- events ------------------------------------------------------------------------
    def events(
        self,
        *,
        after: int = 0,
        limit: int = 200,
        job: str | None = None,
        node: str | None = None,
        address: str | None = None,
        type: str | None = None,
    ) -> list[dict[str, Any]]:
        """One page of events after id ``after``, as this wallet may see them."""
        params = _event_filters(job=job, node=node, address=address, type=type)
        params.update(after=after, limit=limit)
        events: list[dict[str, Any]] = self._send(_Call("GET", "/v1/events", params=params)).json()
        return events

    def stream_events(
        self,
        *,
        after: int | None = None,
        job: str | None = None,
        node: str | None = None,
        address: str | None = None,
        type: str | None = None,
        timeout: float | None = None,
        idle_s: float = 1.0,
        max_failures: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yield events live from the WebSocket stream, in id order, until ``timeout``.

        A dropped connection is re-opened with ``after=<last id seen>`` (the server then
        sends exactly what was missed), with a growing pause between attempts; after
        ``max_failures`` connection attempts in a row fail, ``ConnectionError`` is raised
        (None: keep trying until the timeout). Every ``idle_s`` without an event the
        deadline is checked; callers may also stop by breaking out of the loop.
        """
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        deadline = None if timeout is None else time.monotonic() + timeout
        base = str(self._http.base_url).rstrip("/")
        ws_base = "ws" + base.removeprefix("http")
        filters = _event_filters(job=job, node=node, address=address, type=type)
        cursor = after
        pause = 0.2
        failures = 0
        while deadline is None or time.monotonic() < deadline:
            if cursor is None:  # start from the present, but as an id, so a reconnect resumes
                cursor = self._head_event()
            query = dict(filters)
            if cursor is not None:
                query["after"] = cursor
            path = "/v1/events/ws" + (f"?{httpx.QueryParams(query)}" if query else "")
            headers = self.wallet.sign_request(method="GET", path=path).as_dict()
            try:
                with connect(ws_base + path, additional_headers=headers, open_timeout=10) as ws:
                    pause, failures = 0.2, 0
                    while deadline is None or time.monotonic() < deadline:
                        wait = (
                            idle_s if deadline is None else min(idle_s, deadline - time.monotonic())
                        )
                        try:
                            text = ws.recv(timeout=max(wait, 0.0))
                        except TimeoutError:
                            continue
                        for event in json.loads(text)["events"]:
                            cursor = event["id"]
                            yield event
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1008:  # our filters are wrong
                    raise QuackMeshError(f"event stream refused: {exc.rcvd.reason}") from exc
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                failures += 1  # coordinator restarting or unreachable: try again below
                if max_failures is not None and failures >= max_failures:
                    raise ConnectionError(f"event stream unreachable: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _head_event(self) -> int | None:
        """The newest event id now (``GET /v1/stats``), or None if the coordinator is away."""
        try:
            head: int = self._send(_Call("GET", "/v1/stats")).json()["head_event"]
        except (httpx.TransportError, QuackMeshError):
            return None
        return head

    def nodes(self) -> list[NodePublic]:
        return [NodePublic.model_validate(n) for n in self._send(_Call("GET", "/v1/nodes")).json()]

    def node(self, address: str) -> NodePublic:
        return self._model(_Call("GET", f"/v1/nodes/{address}"), NodePublic)

    # --- staking, slashes, disputes ----------------------------------------------------
    def stake(self, amount: int) -> StakePublic:
        """Move ``amount`` micro-DUCK from the wallet into stake."""
        return self._model(
            _Call("POST", "/v1/stake", json=_body(StakeCreate(amount=amount))), StakePublic
        )

    def unstake(self, amount: int) -> StakePublic:
        """Start unbonding ``amount``; it reaches the wallet after the unbonding period."""
        return self._model(
            _Call("POST", "/v1/stake/unstake", json=_body(StakeCreate(amount=amount))),
            StakePublic,
        )

    def stake_info(self, address: str | None = None) -> StakePublic:
        return self._model(_Call("GET", f"/v1/stake/{address or self.address}"), StakePublic)

    def slashes(self, *, node: str | None = None, job_id: str | None = None) -> list[SlashPublic]:
        params = {k: v for k, v in (("node", node), ("job_id", job_id)) if v is not None}
        return self._model(_Call("GET", "/v1/slashes", params=params), SlashListPublic).slashes

    def dispute(self, job_id: str, *, reason: str = "") -> DisputePublic:
        """Dispute a finished job: extra replicas on high-reputation nodes re-check it."""
        body = DisputeCreate(reason=reason)
        return self._model(
            _Call("POST", f"/v1/jobs/{job_id}/dispute", json=_body(body)), DisputePublic
        )

    def disputes(self, job_id: str) -> list[DisputePublic]:
        response = self._send(_Call("GET", f"/v1/jobs/{job_id}/disputes"))
        return [DisputePublic.model_validate(d) for d in response.json()]

    # --- marketplace -------------------------------------------------------------------
    # --- federated training ------------------------------------------------------------
    def train(
        self,
        params: dict[str, Any],
        *,
        max_price: int,
        eval_data: Path | str | bytes | None = None,
        data: Path | str | bytes | None = None,
        init: Path | str | bytes | None = None,
        rental_id: str | None = None,
        memory_mb: int = 2048,
    ) -> JobPublic:
        """Submit an ``fl.train`` job (README "Federated learning" lists ``params``).

        ``eval_data`` is the holdout for central evaluation; ``data`` an upload to shard
        across trainers (instead of ``params["dataset"]``); ``init`` starting weights.
        """
        inputs = {}
        for name, value in (("eval", eval_data), ("data", data), ("init", init)):
            if value is not None:
                inputs[name] = self.upload(value).sha256
        return self.submit(
            "fl.train",
            inputs=inputs,
            params=params,
            max_price=max_price,
            max_attempts=1,
            memory_mb=memory_mb,
            rental_id=rental_id,
        )

    def fl_run(self, job_id: str) -> FlRunPublic:
        """A federated job's rounds: metrics, ε, participants, scores and rewards."""
        return self._model(_Call("GET", f"/v1/fl/jobs/{job_id}"), FlRunPublic)

    def model_card(self, job_id: str) -> dict[str, Any]:
        card: dict[str, Any] = self._send(_Call("GET", f"/v1/fl/jobs/{job_id}/card")).json()
        return card

    def download_model(self, job_id: str, dest: Path, *, round_no: int | None = None) -> Path:
        """Save the trained weights (safetensors) to ``dest``; the sha256 is checked."""
        path = f"/v1/fl/jobs/{job_id}/model"
        params = {"round": round_no} if round_no is not None else None
        response = self._send(_Call("GET", path, params=params))
        expected = response.headers.get("x-content-sha256", "")
        if hashlib.sha256(response.content).hexdigest() != expected:
            raise ValueError(f"model download of {job_id} does not match its sha256")
        dest.write_bytes(response.content)
        return dest

    def market_nodes(self, **filters: Any) -> MarketNodesPublic:
        """Nodes matching ``filters`` (``gpu_model="4090", min_ram_gb=16, sort="price"``).

        Filters go to the server as given, so a misspelt one is refused there (422), never
        silently ignored; ``None`` values are left out and booleans sent as true/false.
        """
        params = {
            k: (str(v).lower() if isinstance(v, bool) else v)
            for k, v in filters.items()
            if v is not None
        }
        return self._model(_Call("GET", "/v1/market/nodes", params=params), MarketNodesPublic)

    def explain(self, job_id: str) -> ExplainPublic:
        """Why each waiting task of a job is (not) taken: every node and the rule applied."""
        return self._model(_Call("GET", f"/v1/jobs/{job_id}/explain"), ExplainPublic)

    # --- rentals -----------------------------------------------------------------------
    def rent(
        self,
        *,
        nodes: list[str] | None = None,
        gpus: int | None = None,
        hours: float,
        budget: int,
    ) -> RentalPublic:
        """Rent ``nodes`` (or ``gpus`` GPUs' worth of the cheapest) for ``hours``.

        The cost (``hours × Σ price_per_hour``, rounded up) is escrowed at once and must
        not exceed ``budget`` (micro-DUCK); unused time is refunded at the end or on cancel.
        """
        body = RentalCreate(nodes=list(nodes or []), gpus=gpus, hours=hours, budget=budget)
        return self._model(_Call("POST", "/v1/rentals", json=_body(body)), RentalPublic)

    def quote_rental(
        self,
        *,
        nodes: list[str] | None = None,
        gpus: int | None = None,
        hours: float,
        budget: int,
    ) -> RentalQuotePublic:
        """What :meth:`rent` would reserve and cost; nothing is escrowed."""
        body = RentalCreate(nodes=list(nodes or []), gpus=gpus, hours=hours, budget=budget)
        return self._model(_Call("POST", "/v1/rentals/quote", json=_body(body)), RentalQuotePublic)

    def rentals(self) -> list[RentalPublic]:
        return self._model(_Call("GET", "/v1/rentals"), RentalListPublic).rentals

    def rental(self, rental_id: str) -> RentalPublic:
        return self._model(_Call("GET", f"/v1/rentals/{rental_id}"), RentalPublic)

    def cancel_rental(self, rental_id: str) -> RentalPublic:
        """End a rental now: the time used is paid, the rest of the escrow refunded."""
        return self._model(_Call("POST", f"/v1/rentals/{rental_id}/cancel", json={}), RentalPublic)

    # --- webhooks ----------------------------------------------------------------------
    def webhook_create(
        self, url: str, *, types: list[str], description: str = ""
    ) -> WebhookCreatedPublic:
        """Send this wallet's events whose type matches ``types`` (``job.succeeded``,
        ``job.*``, ``*``) to ``url``. The answer holds the signing secret, shown only once."""
        body = WebhookCreate(url=url, types=list(types), description=description)
        return self._model(_Call("POST", "/v1/webhooks", json=_body(body)), WebhookCreatedPublic)

    def webhooks(self) -> list[WebhookPublic]:
        return self._model(_Call("GET", "/v1/webhooks"), WebhookListPublic).webhooks

    def webhook(self, webhook_id: str) -> WebhookPublic:
        return self._model(_Call("GET", f"/v1/webhooks/{webhook_id}"), WebhookPublic)

    def webhook_delete(self, webhook_id: str) -> None:
        """Stop sending to a webhook (its pending deliveries fail; history stays)."""
        self._send(_Call("DELETE", f"/v1/webhooks/{webhook_id}"))

    def webhook_deliveries(
        self, webhook_id: str, *, state: DeliveryState | None = None, limit: int = 50
    ) -> list[DeliveryPublic]:
        """A webhook's deliveries, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        call = _Call("GET", f"/v1/webhooks/{webhook_id}/deliveries", params=params)
        return self._model(call, DeliveryListPublic).deliveries

    def webhook_redeliver(self, webhook_id: str, delivery_id: int) -> DeliveryPublic:
        """Send a delivered or failed delivery again, now."""
        path = f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        return self._model(_Call("POST", path, json={}), DeliveryPublic)

    # --- provider side -----------------------------------------------------------------
    def register_node(self, body: NodeRegister) -> NodePublic:
        return self._model(_Call("POST", "/v1/nodes/register", json=_body(body)), NodePublic)

    def heartbeat(self, body: HeartbeatCreate) -> HeartbeatPublic:
        return self._model(_Call("POST", "/v1/nodes/heartbeat", json=_body(body)), HeartbeatPublic)

    def lease(self, *, max_tasks: int = 1, wait_s: float = 20.0) -> LeasePublic:
        body = LeaseCreate(max_tasks=max_tasks, wait_s=wait_s)
        call = _Call("POST", "/v1/tasks/lease", json=_body(body), timeout=wait_s + 30.0)
        return self._model(call, LeasePublic)

    def report(self, task_id: str, body: TaskReport) -> TaskReportPublic:
        return self._model(
            _Call("POST", f"/v1/tasks/{task_id}/report", json=_body(body)), TaskReportPublic
        )

    def release(self, task_id: str, lease_id: str) -> TaskReportPublic:
        body = ReleaseCreate(lease_id=lease_id)
        return self._model(
            _Call("POST", f"/v1/tasks/{task_id}/release", json=_body(body)), TaskReportPublic
        )

    def download(self, url: str, dest: Path, *, sha256: str) -> Path:
        """Fetch a capability URL to ``dest`` and check its sha256 (ValueError if wrong)."""
        digest = hashlib.sha256()
        tmp = dest.with_name(dest.name + ".part")
        with self._http.stream("GET", url) as response:
            if not response.is_success:
                response.read()
                raise_for_problem(response)
            with tmp.open("wb") as fh:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    fh.write(chunk)
        if digest.hexdigest() != sha256:
            tmp.unlink(missing_ok=True)
            raise ValueError(
                f"sha256 mismatch for {dest.name}: got {digest.hexdigest()}, expected {sha256}"
            )
        tmp.replace(dest)
        return dest

    # --- inference gateway (issue 6) ---------------------------------------------------
    def api_key_create(self, name: str = "") -> ApiKeyCreatedPublic:
        """A gateway API key (``sk-qm-…``) spending from this wallet; the answer is the
        only place the key is ever shown."""
        body = _body(ApiKeyCreate(name=name))
        return self._model(_Call("POST", "/v1/keys", json=body), ApiKeyCreatedPublic)

    def api_key_list(self) -> list[ApiKeyPublic]:
        """This wallet's API keys, newest first (revoked ones too; never the keys)."""
        return self._model(_Call("GET", "/v1/keys"), ApiKeyListPublic).keys

    def api_key_revoke(self, key_id: str) -> ApiKeyPublic:
        """Revoke one of this wallet's API keys; the gateway refuses it from now on."""
        return self._model(_Call("DELETE", f"/v1/keys/{key_id}"), ApiKeyPublic)

    def inference_lease(self, models: list[str], *, wait_s: float = 20.0) -> InferenceWork | None:
        """Serving nodes: long-poll for a request on ``models`` (``None`` when none came)."""
        body = _body(InferenceLease(models=list(models), wait_s=wait_s))
        call = _Call("POST", "/v1/inference/lease", json=body, timeout=wait_s + 30.0)
        data = self._send(call).json()
        return None if data is None else InferenceWork.model_validate(data)

    def inference_stream(
        self, work: InferenceWork, chunks: Iterable[InferenceChunk]
    ) -> dict[str, Any]:
        """Serving nodes: send the answer to ``work`` as it is made, one NDJSON line per
        chunk, in one request authorised by the work's token. ``LeaseLost`` means the
        coordinator no longer wants it (stop)."""

        def lines() -> Iterator[bytes]:
            for chunk in chunks:
                yield chunk.model_dump_json(exclude_defaults=True).encode() + b"\n"

        response = self._http.post(
            f"/v1/inference/{work.id}/stream",
            content=lines(),
            headers={
                "authorization": f"Bearer {work.token}",
                "content-type": "application/x-ndjson",
            },
            auth=httpx.Auth(),  # the token is the capability; a streamed body is not signed
            timeout=work.deadline_s + 30.0,
        )
        raise_for_problem(response)
        data: dict[str, Any] = response.json()
        return data


class AsyncClient:
    """The client-side API of :class:`Client` with ``async`` methods."""

    def __init__(
        self,
        coordinator: str,
        wallet: Wallet,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
    ) -> None:
        self.wallet = wallet
        self.max_retries = max_retries
        self.address = wallet.address
        self._http = httpx.AsyncClient(
            base_url=coordinator, auth=SignedAuth(wallet), transport=transport, timeout=timeout
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            response = await self._http.request(
                call.method, call.path, json=call.json, params=call.params
            )
            if response.status_code != 429 or attempt == self.max_retries:
                break
            await asyncio.sleep(min(30.0, float(response.headers.get("retry-after", "1"))))
        raise_for_problem(response)
        return response

    async def _model(self, call: _Call, model: type[M]) -> M:
        return model.model_validate((await self._send(call)).json())

    async def upload(self, data: Path | str | bytes) -> BlobPublic:
        content = data if isinstance(data, bytes) else Path(data).read_bytes()
        response = await self._http.post(
            "/v1/blobs", content=content, headers={"content-type": "application/octet-stream"}
        )
        raise_for_problem(response)
        return BlobPublic.model_validate(response.json())

    async def submit(
        self,
        kind: str,
        *,
        data: Path | str | bytes | None = None,
        inputs: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        max_price: int,
        max_attempts: int = 3,
        timeout_s: float = 600.0,
        memory_mb: int = 2048,
        verification: Verification | None = None,
        rental_id: str | None = None,
    ) -> JobPublic:
        named = dict(inputs or {})
        if data is not None:
            named["data"] = (await self.upload(data)).sha256
        call = _Api.job_create(
            kind,
            named,
            params,
            max_price,
            max_attempts,
            timeout_s,
            memory_mb,
            verification,
            rental_id,
        )
        return await self._model(call, JobPublic)

    async def status(self, job_id: str) -> JobPublic:
        return await self._model(_Call("GET", f"/v1/jobs/{job_id}"), JobPublic)

    async def wait(self, job_id: str, *, timeout: float = 600.0, poll: float = 0.5) -> JobPublic:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.status(job_id)
            if job.state in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.state} after {timeout}s")
            await asyncio.sleep(poll)

    async def result(self, job_id: str) -> JobResultPublic:
        return await self._model(_Call("GET", f"/v1/jobs/{job_id}/result"), JobResultPublic)

    async def cancel(self, job_id: str) -> JobPublic:
        return await self._model(_Call("POST", f"/v1/jobs/{job_id}/cancel", json={}), JobPublic)

    async def balance(self) -> BalancePublic:
        return await self._model(_Call("GET", "/v1/balance"), BalancePublic)

    async def faucet(self, amount: int) -> BalancePublic:
        body = _body(FaucetCreate(amount=amount))
        return await self._model(_Call("POST", "/v1/faucet", json=body), BalancePublic)
