"""WebhookService: parse the request, call the domain, convert the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.convert_webhooks import delivery_to_proto, filter_from_proto, webhook_to_proto
from modelreg.api.identity import actor_of, caller
from modelreg.api.services import add_service
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.webhooks import Webhooks, parse_delivery_name, parse_webhook_name
from modelreg.v1 import webhook_service_pb2 as wh

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = wh.DESCRIPTOR.services_by_name["WebhookService"]


def add_webhook_service(
    servicer: WebhookServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every WebhookService RPC."""
    add_service(server, servicer, SERVICE, wh, consistency=consistency)


class WebhookServicer:
    """The WebhookService RPCs; errors are mapped by api.interceptors."""

    def __init__(self, webhooks: Webhooks) -> None:
        self._w = webhooks

    async def CreateWebhook(
        self, request: wh.CreateWebhookRequest, context: Context
    ) -> wh.CreateWebhookResponse:
        given = request.webhook
        webhook, secret = await self._w.create(
            webhook_id=request.webhook_id,
            url=given.url,
            filter=filter_from_proto(given.filter),
            description=given.description,
            actor=actor_of(context),
            created_by=caller().name,
            created_groups=caller().groups,
        )
        return wh.CreateWebhookResponse(webhook=webhook_to_proto(webhook), secret=secret)

    async def GetWebhook(
        self, request: wh.GetWebhookRequest, context: Context
    ) -> wh.GetWebhookResponse:
        webhook = await self._w.get(webhook_id=parse_webhook_name(request.name))
        return wh.GetWebhookResponse(webhook=webhook_to_proto(webhook))

    async def ListWebhooks(
        self, request: wh.ListWebhooksRequest, context: Context
    ) -> wh.ListWebhooksResponse:
        page = await self._w.list(size=request.page_size, token=request.page_token)
        return wh.ListWebhooksResponse(
            webhooks=[webhook_to_proto(w) for w in page.items], next_page_token=page.next_token
        )

    async def DeleteWebhook(
        self, request: wh.DeleteWebhookRequest, context: Context
    ) -> wh.DeleteWebhookResponse:
        await self._w.delete(webhook_id=parse_webhook_name(request.name), actor=actor_of(context))
        return wh.DeleteWebhookResponse()

    async def ListWebhookDeliveries(
        self, request: wh.ListWebhookDeliveriesRequest, context: Context
    ) -> wh.ListWebhookDeliveriesResponse:
        page = await self._w.deliveries(
            webhook_id=parse_webhook_name(request.parent, "parent"),
            size=request.page_size,
            token=request.page_token,
        )
        return wh.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in page.items],
            next_page_token=page.next_token,
        )

    async def RedeliverWebhook(
        self, request: wh.RedeliverWebhookRequest, context: Context
    ) -> wh.RedeliverWebhookResponse:
        webhook_id = parse_webhook_name(request.name)
        target = request.WhichOneof("target")
        if target == "delivery":
            owner, delivery_id = parse_delivery_name(request.delivery)
            if owner != webhook_id:
                raise InvalidArgument.field("delivery", f"is not a delivery of {request.name}")
            webhook = await self._w.redeliver_one(
                webhook_id=webhook_id, delivery_id=delivery_id, actor=actor_of(context)
            )
        elif target == "from_revision":
            webhook = await self._w.redeliver_from(
                webhook_id=webhook_id, revision=request.from_revision, actor=actor_of(context)
            )
        else:
            raise InvalidArgument.field("target", "give a delivery or a from_revision")
        return wh.RedeliverWebhookResponse(webhook=webhook_to_proto(webhook))
