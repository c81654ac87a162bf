"""`Golem`: a requestor's session with its node: the allocation, demands and negotiation, agreements, payments.

    async with Golem(budget=5, app_key=key, payment_network="local") as golem:
        async for task in golem.execute_tasks(work, data, payload=WasmPackage(pkg)):
            print(task.data, task.result)

On the way out it ends every agreement, waits (bounded) for their invoices, accepts those
that pass its checks, and releases the allocation.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from requestor.activity import Activity
from requestor.errors import ApiError, ConfigurationError, NoProviderError
from requestor.gftp import GftpServer
from requestor.payload import Payload, Resources, build_demand
from requestor.payments import AgreementTerms, check_debit_note, check_invoice, glm_of
from requestor.rest import RestClient, _glm, parse_time
from requestor.strategy import Prices, ProviderOffer, Strategy, as_strategy

if TYPE_CHECKING:
    from requestor.network import Network
    from requestor.services import Service

__all__ = ["Golem", "Agreement", "Demand"]

D = TypeVar("D")
R = TypeVar("R")

_COLLECT_S = 2.0
_APPROVAL_S = 15.0
_RECOUNTER_S = 3.0


@dataclass(eq=False)
class Agreement:
    """An approved agreement with one provider."""

    agreement_id: str
    offer: ProviderOffer
    approved_s: float
    demand: Demand
    ended_s: float | None = None
    activities: list[str] = field(default_factory=list)

    @property
    def provider_id(self) -> str:
        return self.offer.provider_id

    def __repr__(self) -> str:
        return f"Agreement({self.agreement_id[:12]} with {self.offer.name})"


@dataclass(eq=False)
class _Candidate:
    provider_id: str
    initial: ProviderOffer  # the provider's Initial proposal, countered for each new Draft
    draft: ProviderOffer | None = None
    countered_s: float = 0.0  # a counter awaits the provider's answer since then (0: none)
    retry_after_s: float = 0.0
    counter_id: str = ""


class Demand:
    """A subscribed demand and its negotiations: Drafts from providers, turned into agreements on request."""

    def __init__(self, golem: Golem, properties: dict[str, Any], constraints: str) -> None:
        self._golem = golem
        self.properties = properties
        self.constraints = constraints
        self.subscription_id = ""
        self._candidates: dict[str, _Candidate] = {}
        self._busy: set[str] = set()
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._log = golem._log

    async def start(self) -> None:
        self.subscription_id = await self._golem.rest.market.subscribe_demand(self.properties, self.constraints)
        self._task = asyncio.create_task(self._collect(), name=f"demand-{self.subscription_id[:8]}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping
                pass
        try:
            await self._golem.rest.market.unsubscribe_demand(self.subscription_id)
        except ApiError:
            pass  # expired or gone already

    @property
    def providers_seen(self) -> int:
        return len(self._candidates)

    async def _collect(self) -> None:
        market = self._golem.rest.market
        while True:
            try:
                events = await market.collect_offers(self.subscription_id, timeout_s=_COLLECT_S)
            except ApiError as exc:
                if exc.status == 404:  # the demand expired: subscribe again, drafts are lost
                    self._log.info("demand_resubscribed", subscription_id=self.subscription_id)
                    self.subscription_id = await market.subscribe_demand(self.properties, self.constraints)
                    self._candidates.clear()
                    continue
                self._log.warning("collect_offers_failed", error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for event in events:
                try:
                    await self._on_event(event)
                except (KeyError, TypeError, ValueError) as exc:  # a malformed event must not end negotiation
                    self._log.warning("market_event_skipped", error=repr(exc), event_type=event.get("eventType"))
            await self._counter_where_needed()

    async def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("eventType")
        if kind == "ProposalEvent":
            raw = event["proposal"]
            offer = ProviderOffer(raw["proposalId"], raw["issuerId"], raw.get("properties") or {})
            if raw.get("state") == "Initial":
                problem = self._golem.strategy.problem(offer)
                if problem is not None:
                    self._log.info("offer_refused", provider=offer.provider_id, reason=problem)
                    await self._reject(offer.proposal_id, problem)
                    return
                cand = self._candidates.get(offer.provider_id)
                if cand is None:
                    self._candidates[offer.provider_id] = _Candidate(offer.provider_id, offer)
                else:
                    cand.initial = offer
            elif raw.get("state") == "Draft":
                cand = self._candidates.get(offer.provider_id)
                if cand is None:
                    return
                cand.draft, cand.countered_s = offer, 0.0
                async with self._changed:
                    self._changed.notify_all()
        elif kind == "ProposalRejectedEvent":
            # The provider refused our counter (busy, limits): ask again a little later.
            rejected = event.get("proposalId")
            reason = (event.get("reason") or {}).get("message")
            for cand in self._candidates.values():
                if cand.counter_id == rejected:
                    self._log.info("counter_rejected", provider=cand.provider_id, reason=reason)
                    cand.countered_s, cand.retry_after_s = 0.0, time.monotonic() + _RECOUNTER_S

    async def _reject(self, proposal_id: str, why: str) -> None:
        try:
            await self._golem.rest.market.reject_proposal(self.subscription_id, proposal_id, why)
        except ApiError:
            pass

    async def _counter_where_needed(self) -> None:
        """Every provider that is free, not excluded and has no Draft nor a counter under way gets one."""
        now = time.monotonic()
        for cand in list(self._candidates.values()):
            if cand.draft is not None or cand.provider_id in self._busy or cand.provider_id in self._golem.blocked:
                continue
            if cand.countered_s and now - cand.countered_s < 10.0:
                continue
            if now < cand.retry_after_s:
                continue
            cand.countered_s = now
            try:
                cand.counter_id = await self._golem.rest.market.counter_proposal(
                    self.subscription_id, cand.initial.proposal_id, self.properties, self.constraints
                )
            except ApiError as exc:
                self._log.info("counter_failed", provider=cand.provider_id, error=str(exc))
                if exc.status in (404, 409, 410):
                    # Its Initial proposal expired or its offer was withdrawn: a renewed offer comes as a new one.
                    del self._candidates[cand.provider_id]
                    continue
                cand.countered_s, cand.retry_after_s = 0.0, now + _RECOUNTER_S

    async def acquire(
        self, exclude: Iterable[str] | Callable[[str], bool] = (), timeout_s: float = 120.0
    ) -> Agreement:  # fmt: skip
        """An approved agreement with the best-ranked free provider not excluded.

        exclude: provider ids, or a predicate saying which provider ids to pass over.

        Raises:
            NoProviderError: none could be agreed with within timeout_s.
        """
        if callable(exclude):
            passed_over = exclude
        else:
            ids = set(exclude)
            passed_over = ids.__contains__
        deadline = time.monotonic() + timeout_s
        while True:
            choice = self._best(passed_over)
            if choice is not None:
                cand, draft = choice
                self._busy.add(cand.provider_id)
                cand.draft = None
                agreement = await self._agree(draft)
                if agreement is not None:
                    return agreement
                self._busy.discard(cand.provider_id)
                cand.retry_after_s = time.monotonic() + _RECOUNTER_S
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                seen = len(self._candidates)
                skipped = sum(1 for p in self._candidates if passed_over(p) or p in self._golem.blocked)
                raise NoProviderError(
                    f"no provider agreed within {timeout_s:.0f} s ({seen} offered, {len(self._busy)} busy with us, "
                    f"{skipped} excluded or failed before)"
                )
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
                except TimeoutError:
                    pass

    def _best(self, passed_over: Callable[[str], bool]) -> tuple[_Candidate, ProviderOffer] | None:
        best: tuple[float, _Candidate, ProviderOffer] | None = None
        for cand in self._candidates.values():
            if cand.draft is None or cand.provider_id in self._busy or passed_over(cand.provider_id):
                continue
            if cand.provider_id in self._golem.blocked:
                continue
            score = self._golem.strategy.score(cand.draft)
            if best is None or score > best[0]:
                best = (score, cand, cand.draft)
        return None if best is None else (best[1], best[2])

    async def _agree(self, draft: ProviderOffer) -> Agreement | None:
        market = self._golem.rest.market
        valid_to = datetime.now(timezone.utc) + timedelta(seconds=self._golem.expiration_s - 30)
        agreement_id = ""
        try:
            agreement_id = await market.create_agreement(draft.proposal_id, valid_to)
            await market.confirm_agreement(agreement_id, self._golem.session_id)
            waited = 0.0
            while True:
                try:
                    await market.wait_for_approval(agreement_id, _APPROVAL_S)
                    break
                except ApiError as exc:
                    waited += _APPROVAL_S
                    if exc.status != 408 or waited >= 2 * _APPROVAL_S:
                        raise
        except ApiError as exc:
            self._log.info("agreement_not_made", provider=draft.provider_id, error=str(exc))
            if agreement_id and exc.status == 408:  # still pending: withdraw it rather than leave it hanging
                try:
                    await market.cancel_agreement(agreement_id, "the provider did not answer in time")
                except ApiError:
                    pass
            return None
        agreement = Agreement(agreement_id, draft, time.time(), self)
        self._golem._on_agreement(agreement)
        return agreement

    def release(self, agreement: Agreement) -> None:
        """The provider is free for a new agreement (after the old one ended)."""
        self._busy.discard(agreement.provider_id)


class Golem:
    """A requestor's session with its node (an async context manager).

    budget: GLM set aside in an allocation. payment_network / payment_driver: the platform
    `<driver>-<network>-<token>` (default: $YAGNA_PAYMENT_NETWORK, $YAGNA_PAYMENT_DRIVER, else
    the node's default network). strategy: "lowest_price" (default), "most_threads", a
    Strategy or a callable scoring a ProviderOffer. max_price: Prices caps. invoice_wait_s:
    how long closing waits for the invoices of ended agreements.
    """

    def __init__(
        self, *, budget: float | int | str | Decimal, app_key: str | None = None, api_url: str | None = None,
        payment_network: str | None = None, payment_driver: str | None = None, subnet: str = "public",
        strategy: Strategy | str | Callable[[ProviderOffer], float] | None = None, max_price: Prices | None = None,
        data_dir: str | Path | None = None, invoice_wait_s: float = 60.0, expiration_s: float = 1800.0,
        progress: bool | None = None,
    ) -> None:  # fmt: skip
        self.budget = _budget(budget)
        if not isinstance(subnet, str) or not subnet:
            raise ConfigurationError(f"subnet must be a non-empty string, not {subnet!r}")
        if isinstance(invoice_wait_s, bool) or not isinstance(invoice_wait_s, (int, float)) or invoice_wait_s < 0:
            raise ConfigurationError(f"invoice_wait_s must be a number of seconds from 0, not {invoice_wait_s!r}")
        if isinstance(expiration_s, bool) or not isinstance(expiration_s, (int, float)) or not 300 <= expiration_s <= 86400:
            raise ConfigurationError(f"expiration_s must be 300 to 86400 seconds, not {expiration_s!r}")
        self.rest = RestClient.from_env(api_url, app_key)
        self.network = payment_network or os.environ.get("YAGNA_PAYMENT_NETWORK") or None
        self.driver = payment_driver or os.environ.get("YAGNA_PAYMENT_DRIVER") or "erc20"
        self.subnet = subnet
        self.strategy = as_strategy(strategy, max_price)
        self.invoice_wait_s = float(invoice_wait_s)
        self.expiration_s = float(expiration_s)
        self.session_id = uuid.uuid4().hex
        self.gftp = GftpServer(data_dir)
        self.node_id = ""
        self.allocation_id = ""
        self.platform = ""
        self.blocked: set[str] = set()  # providers that failed us: no new agreements with them
        self.agreements: dict[str, Agreement] = {}  # live ones
        self._ended: dict[str, Agreement] = {}
        self._terms: dict[str, AgreementTerms] = {}
        self._invoiced: dict[str, Decimal] = {}  # agreement id -> accepted invoice amount
        self._debited: dict[str, Decimal] = {}  # activity id -> last accepted debit note total
        self._activity_agreement: dict[str, str] = {}
        self._settled: set[str] = set()  # agreements whose invoice was decided (accepted or rejected)
        self.rejected: list[tuple[str, str]] = []  # (document id, why)
        self._demands: list[Demand] = []
        self._networks: list[Network] = []  # virtual networks not removed yet, removed by close()
        self.workers: set[asyncio.Task[None]] = set()  # execute_tasks' workers, cancelled by close()
        self._loops: list[asyncio.Task[None]] = []
        self._started_at = datetime.now(timezone.utc)
        self._want_progress = progress
        self.progress: Any = None
        self._log = structlog.get_logger().bind(component="requestor")

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Golem:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the client, learn who we are, and set the budget aside.

        Raises:
            ApiError: the node refused (an unknown app-key: 401; a budget beyond the balance: 400).
        """
        from requestor.progress import ProgressView

        await self.rest.open()
        try:
            self.node_id = (await self.rest.me())["identity"]
            platform = None
            if self.network:
                token = "glm" if self.network in ("mainnet", "polygon") else "tglm"
                platform = f"{self.driver}-{self.network}-{token}"
            allocation = await self.rest.payment.create_allocation(
                platform or "", self.budget, datetime.now(timezone.utc) + timedelta(days=1)
            )
        except BaseException:
            await self.rest.close()
            raise
        self.allocation_id = allocation["allocationId"]
        self.platform = allocation["paymentPlatform"]
        self._started_at = datetime.now(timezone.utc) - timedelta(seconds=1)
        self._loops = [
            asyncio.create_task(self._payment_loop("debitNote"), name="debit-notes"),
            asyncio.create_task(self._payment_loop("invoice"), name="invoices"),
        ]
        show = self._want_progress if self._want_progress is not None else sys.stdout.isatty()
        self.progress = ProgressView(enabled=bool(show))
        self.progress.start()
        self._log.info("session_started", node_id=self.node_id, allocation_id=self.allocation_id, platform=self.platform)

    async def close(self) -> None:
        """End every agreement, wait (bounded) for invoices, release the allocation, close the client."""
        try:
            for worker in list(self.workers):  # an execute_tasks left before its end
                worker.cancel()
            for worker in list(self.workers):
                try:
                    await worker
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
                    pass
            for demand in list(self._demands):
                await demand.stop()
            for agreement in list(self.agreements.values()):
                await self.terminate(agreement, "the requestor is done")
            await self._wait_invoices()
        finally:
            for network in list(self._networks):
                try:
                    await network.remove()
                except ApiError as exc:
                    self._log.warning("network_not_removed", network_id=network.network_id, error=str(exc))
            for loop in self._loops:
                loop.cancel()
            for loop in self._loops:
                try:
                    await loop
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
                    pass
            if self.allocation_id:
                try:
                    await self.rest.payment.release_allocation(self.allocation_id)
                except ApiError as exc:
                    self._log.warning("allocation_not_released", allocation_id=self.allocation_id, error=str(exc))
            if self.progress is not None:
                self.progress.stop()
            await self.gftp.close()
            await self.rest.close()

    async def _wait_invoices(self) -> None:
        deadline = time.monotonic() + self.invoice_wait_s
        while time.monotonic() < deadline:
            owed = [a for a in self._ended if a not in self._settled and self._ended[a].activities]
            if not owed:
                return
            await asyncio.sleep(0.2)
        missing = [a[:12] for a in self._ended if a not in self._settled and self._ended[a].activities]
        if missing:
            self._log.warning("invoices_not_received", agreements=missing, waited_s=self.invoice_wait_s)

    # -- market ------------------------------------------------------------------------------

    async def demand(
        self, payload: Payload, resources: Resources | None = None, *, constraints: Iterable[str] = (), **extra: Any
    ) -> Demand:
        """Subscribe a demand for a payload (decorated with the allocation) and start negotiating.

        constraints: more filters on offers, e.g. "(golem.runtime.capabilities=vpn)"; extra: more properties.
        """
        if not isinstance(payload, Payload):
            raise ConfigurationError(f"payload must be a Payload (WasmPackage(...) or VmImage(...)), not {type(payload).__name__}")
        self._require_started()
        filters = [constraints] if isinstance(constraints, str) else list(constraints)
        decorations = await self.rest.payment.demand_decorations([self.allocation_id])
        expiration_ms = int((time.time() + self.expiration_s) * 1000)
        props, demand_constraints = build_demand(
            payload, resources or Resources(), subnet=self.subnet, expiration_ms=expiration_ms, decorations=decorations,
            extra_properties=extra or None, extra_constraints=filters,
        )  # fmt: skip
        demand = Demand(self, props, demand_constraints)
        await demand.start()
        self._demands.append(demand)
        return demand

    def demands_done(self, demand: Demand) -> None:
        """A demand was stopped by its user (execute_tasks, a service)."""
        if demand in self._demands:
            self._demands.remove(demand)

    def _on_agreement(self, agreement: Agreement) -> None:
        self.agreements[agreement.agreement_id] = agreement
        self._terms[agreement.agreement_id] = AgreementTerms(
            agreement.agreement_id, agreement.provider_id, agreement.offer, self.platform, self.node_id, agreement.approved_s
        )
        self._update_progress()
        self._log.info("agreement_approved", agreement_id=agreement.agreement_id, provider=agreement.offer.name)

    async def start_activity(
        self, agreement: Agreement, *, deploy_timeout_s: float = 300.0, deploy_args: dict[str, Any] | None = None
    ) -> Activity:
        """An activity under the agreement, deployed (with deploy_args, e.g. a network's) and started.

        Raises:
            ApiError, CommandError, ActivityError: the provider could not start it.
        """
        from requestor.script import Script

        activity_id = await self.rest.activity.create_activity(agreement.agreement_id)
        agreement.activities.append(activity_id)
        self._activity_agreement[activity_id] = agreement.agreement_id
        activity = Activity(self.rest, agreement, activity_id, self.gftp)
        script = Script()
        script.deploy(**(deploy_args or {}))
        script.start()
        try:
            await activity.run(script, timeout_s=deploy_timeout_s)
        except BaseException:
            await activity.destroy()
            raise
        return activity

    async def terminate(self, agreement: Agreement, why: str, *, failed: bool = False) -> None:
        """End an agreement (repeats are no-ops); failed=True also stops new agreements with its provider."""
        if failed:
            self.blocked.add(agreement.provider_id)
        if agreement.ended_s is not None:
            return
        agreement.ended_s = time.time()
        self.agreements.pop(agreement.agreement_id, None)
        self._ended[agreement.agreement_id] = agreement
        terms = self._terms.get(agreement.agreement_id)
        if terms is not None:
            self._terms[agreement.agreement_id] = AgreementTerms(
                terms.agreement_id, terms.provider_id, terms.offer, terms.platform, terms.payer, terms.approved_s, agreement.ended_s
            )
        try:
            await self.rest.market.terminate_agreement(agreement.agreement_id, why, "Error" if failed else "Success")
        except ApiError as exc:
            self._log.info("terminate_failed", agreement_id=agreement.agreement_id, error=str(exc))
        agreement.demand.release(agreement)
        self._update_progress()

    # -- payments ----------------------------------------------------------------------------

    @property
    def spent(self) -> Decimal:
        """GLM accepted so far: invoices, and the debit notes of agreements not invoiced yet."""
        total = sum(self._invoiced.values(), Decimal(0))
        for activity_id, amount in self._debited.items():
            if self._activity_agreement.get(activity_id) not in self._invoiced:
                total += amount
        return total

    def invoiced(self, agreement_id: str) -> Decimal | None:
        """The accepted invoice amount of an agreement (None until one was accepted)."""
        return self._invoiced.get(agreement_id)

    async def _payment_loop(self, kind: str) -> None:
        after = self._started_at
        while True:
            try:
                events = await self.rest.payment.events(kind, after, timeout_s=2.0)
            except ApiError as exc:
                self._log.warning("payment_events_failed", kind=kind, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            for event in events:
                try:
                    after = max(after, parse_time(event["eventDate"]))
                except (KeyError, ValueError):
                    pass
                if event.get("eventType") in ("DebitNoteReceivedEvent", "InvoiceReceivedEvent"):
                    doc_id = event.get("debitNoteId") or event.get("invoiceId")
                    try:
                        await self._decide(kind, str(doc_id))
                    except (ApiError, KeyError, TypeError, ValueError) as exc:
                        self._log.warning("payment_decision_failed", kind=kind, document_id=doc_id, error=str(exc))

    async def _decide(self, kind: str, doc_id: str) -> None:
        doc = await self.rest.payment.document(kind, doc_id)
        agreement_id = doc.get("agreementId", "")
        terms = self._terms.get(agreement_id)
        if terms is None:
            return  # not an agreement of this session: another client's to decide
        now = time.time()
        if kind == "debitNote":
            problem = check_debit_note(doc, terms, now)
            amount_text = doc.get("totalAmountDue")
        else:
            problem = check_invoice(doc, terms, now)
            amount_text = doc.get("amount")
        amount = glm_of(amount_text) or Decimal(0)
        if problem is None:
            remaining = await self._remaining()
            already = self._debited_for(agreement_id) if kind == "invoice" else self._debited.get(str(doc.get("activityId")), Decimal(0))
            if remaining is not None and amount - already > remaining:
                problem = f"{kind} {doc_id} asks {_glm(amount)} GLM; the budget has {_glm(remaining)} GLM left"
        if problem is not None:
            self.rejected.append((doc_id, problem))
            self._log.warning("payment_document_rejected", kind=kind, document_id=doc_id, reason=problem)
            await self.rest.payment.reject(kind, doc_id, "INCORRECT_AMOUNT", problem)
            if kind == "invoice":
                self._settled.add(agreement_id)
            return
        await self.rest.payment.accept(kind, doc_id, str(amount_text), self.allocation_id)
        if kind == "debitNote":
            self._debited[str(doc.get("activityId"))] = amount
        else:
            self._invoiced[agreement_id] = amount
            self._settled.add(agreement_id)
        self._update_progress()

    def _debited_for(self, agreement_id: str) -> Decimal:
        return sum((v for a, v in self._debited.items() if self._activity_agreement.get(a) == agreement_id), Decimal(0))

    async def _remaining(self) -> Decimal | None:
        try:
            allocation = await self.rest.payment.get_allocation(self.allocation_id)
        except ApiError:
            return None
        return glm_of(allocation.get("remainingAmount"))

    # -- work --------------------------------------------------------------------------------

    def execute_tasks(
        self, work: Callable[[Any, D], Awaitable[R]], data: Iterable[D], *, payload: Payload,
        resources: Resources | None = None, max_workers: int = 4, redundancy: int = 1, max_attempts: int = 3,
        timeout_s: float = 300.0, provider_timeout_s: float = 120.0, vote_key: Callable[[Any], Hashable] | None = None,
        pipeline: int = 1,
    ) -> AsyncIterator[Any]:  # fmt: skip
        """Run `work(ctx, item)` for every item across providers; yields each Task as it finishes.

        See requestor.executor.execute_tasks.
        """
        from requestor.executor import execute_tasks

        return execute_tasks(
            self, work, data, payload=payload, resources=resources, max_workers=max_workers, redundancy=redundancy,
            max_attempts=max_attempts, timeout_s=timeout_s, provider_timeout_s=provider_timeout_s, vote_key=vote_key,
            pipeline=pipeline,
        )  # fmt: skip

    async def run_service(
        self, payload: Payload, *, resources: Resources | None = None, start: Callable[[Any], Awaitable[None]] | None = None,
        provider_timeout_s: float = 120.0, network: Network | None = None, ip: str | None = None,
    ) -> Service:  # fmt: skip
        """A long-lived service on one provider: deployed, started, and `start(ctx)` run; see requestor.services.

        network: a virtual network (create_network) the service joins, at ip (default: the next free
        address), for `service.connect(port)`; only vm payloads can join one.
        """
        from requestor.services import Service

        service = Service(
            self, payload, resources=resources, on_start=start, provider_timeout_s=provider_timeout_s, network=network, ip=ip,
        )  # fmt: skip
        try:
            await service.start()
        except BaseException:
            await service.stop()  # the caller has no handle on it: leave no demand nor address behind
            raise
        return service

    async def create_network(
        self, ip: str, *, mask: str | None = None, gateway: str | None = None, requestor_ip: str | None = None
    ) -> Network:
        """A virtual network for services, e.g. "192.168.0.0/24"; the requestor's address is its first host.

            net = await golem.create_network("192.168.0.0/24")
            service = await golem.run_service(VmImage(pkg), network=net)     # 192.168.0.2

        mask: the netmask, when ip has no /prefix (default /24). It is removed when the session closes.

        Raises:
            ConfigurationError: an argument that is not a string, or a requestor_ip outside the range.
            ApiError: the node refused the range (status 400, its reason in the message).
        """
        from requestor.network import Network

        self._require_started()
        network = await Network.create(self, ip, mask=mask, gateway=gateway, requestor_ip=requestor_ip)
        self._networks.append(network)
        return network

    def _networks_done(self, network: Network) -> None:
        if network in self._networks:
            self._networks.remove(network)

    # -- misc --------------------------------------------------------------------------------

    def _require_started(self) -> None:
        if not self.allocation_id:
            raise ConfigurationError("the Golem session is not started: use `async with Golem(...) as golem`")

    def _update_progress(self) -> None:
        if self.progress is not None:
            self.progress.update(agreements=len(self.agreements), spent=self.spent)


def _budget(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigurationError(f"budget must be an amount of GLM (a number or a decimal string), not {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ConfigurationError(f"budget {value!r} is not an amount of GLM") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigurationError(f"budget must be more than 0 GLM, not {value!r}")
    return amount
