"""Request builders for WebhookService (each builder's docstring is its method's).
Subscriptions are named `webhooks/{id}` or by their id alone."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message

from modelreg.client.calls import WEBHOOKS, Call, Pages
from modelreg.v1 import webhook_service_pb2 as wh


def webhook_name(webhook: str) -> str:
    """`webhooks/{id}` for an id or a resource name."""
    return webhook if webhook.startswith("webhooks/") else f"webhooks/{webhook}"


def create_webhook(
    url: str,
    *,
    webhook_id: str = "",
    namespaces: Iterable[str] = (),
    models: Iterable[str] = (),
    aliases: Iterable[str] = (),
    kinds: Iterable[str] = (),
    description: str = "",
    timeout: float | None = None,
) -> Call[wh.CreateWebhookResponse]:
    """Subscribe `url` to the events matching the filter (resource names); the reply holds
    the signing secret, returned this once. Not retried once sent (a retry could make a
    second subscription)."""
    webhook_filter = wh.WebhookFilter(
        namespaces=list(namespaces), models=list(models), aliases=list(aliases), kinds=list(kinds)
    )
    hook = wh.Webhook(url=url, filter=webhook_filter, description=description)
    request = wh.CreateWebhookRequest(webhook_id=webhook_id, webhook=hook)
    return Call("CreateWebhook", request, lambda r: r, False, timeout, WEBHOOKS)


def get_webhook(webhook: str, *, timeout: float | None = None) -> Call[wh.Webhook]:
    """Return one subscription (never its secret)."""
    request = wh.GetWebhookRequest(name=webhook_name(webhook))
    return Call("GetWebhook", request, lambda r: r.webhook, True, timeout, WEBHOOKS)


def list_webhooks(
    *, page_size: int | None = None, timeout: float | None = None
) -> Pages[wh.Webhook]:
    """Iterate over every subscription, in id order."""

    def page(token: str) -> Message:
        return wh.ListWebhooksRequest(page_size=page_size or 0, page_token=token)

    return Pages("ListWebhooks", page, lambda r: r.webhooks, timeout, WEBHOOKS)


def delete_webhook(webhook: str, *, timeout: float | None = None) -> Call[wh.DeleteWebhookResponse]:
    """Delete a subscription and its delivery log."""
    request = wh.DeleteWebhookRequest(name=webhook_name(webhook))
    return Call("DeleteWebhook", request, lambda r: r, True, timeout, WEBHOOKS)


def list_deliveries(
    webhook: str, *, page_size: int | None = None, timeout: float | None = None
) -> Pages[wh.WebhookDelivery]:
    """Iterate over a subscription's delivery attempts, newest first."""
    name = webhook_name(webhook)

    def page(token: str) -> Message:
        return wh.ListWebhookDeliveriesRequest(
            parent=name, page_size=page_size or 0, page_token=token
        )

    return Pages("ListWebhookDeliveries", page, lambda r: r.deliveries, timeout, WEBHOOKS)


def redeliver(
    webhook: str,
    *,
    delivery: str | None = None,
    from_revision: int | None = None,
    timeout: float | None = None,
) -> Call[wh.Webhook]:
    """Send again the event of one past `delivery` (its name, or its number), or every
    matching event `from_revision` on (the same webhook-ids as before)."""
    name = webhook_name(webhook)
    request = wh.RedeliverWebhookRequest(name=name)
    if delivery is not None:
        request.delivery = delivery if "/" in delivery else f"{name}/deliveries/{delivery}"
    if from_revision is not None:
        request.from_revision = from_revision
    return Call("RedeliverWebhook", request, lambda r: r.webhook, True, timeout, WEBHOOKS)
