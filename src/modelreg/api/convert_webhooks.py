"""Pure conversions between WebhookService messages and domain values (beside convert.py,
which holds the registry's)."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from modelreg.api.convert import timestamp
from modelreg.domain.webhooks import Delivery, Webhook, WebhookFilter
from modelreg.v1 import webhook_service_pb2 as wh


def filter_from_proto(message: wh.WebhookFilter) -> WebhookFilter:
    return WebhookFilter.parse(
        namespaces=list(message.namespaces),
        models=list(message.models),
        aliases=list(message.aliases),
        kinds=list(message.kinds),
    )


def webhook_to_proto(webhook: Webhook) -> wh.Webhook:
    stored = webhook.filter.to_json()
    return wh.Webhook(
        name=webhook.name,
        url=webhook.url,
        filter=wh.WebhookFilter(**stored),
        description=webhook.description,
        state=wh.WEBHOOK_STATE_ACTIVE,
        create_time=timestamp(webhook.create_time),
        delivered_revision=webhook.delivered_revision,
    )


def delivery_to_proto(delivery: Delivery) -> wh.WebhookDelivery:
    latency = Duration()
    latency.FromNanoseconds(round(delivery.latency_seconds * 1e9))
    return wh.WebhookDelivery(
        name=delivery.name,
        revision=delivery.revision,
        message_id=delivery.message_id,
        kind=delivery.kind,
        attempt=delivery.attempt,
        http_status=delivery.http_status,
        error=delivery.error,
        latency=latency,
        attempt_time=timestamp(delivery.attempt_time),
        next_attempt_time=timestamp(delivery.next_attempt_time),
        succeeded=delivery.succeeded,
    )
