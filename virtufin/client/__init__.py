"""The Python client of Virtufin's gateway: async (`AsyncClient`) and blocking (`Client`).

Both expose the gateway's services as attributes, with typed calls:

- ``client.gateway``: ``invoke_json``/``invoke``, ``list_services``, ``list_methods``,
  ``get_method_schema``, ``subscribe`` (an event stream), and Virtufin's dynamic dispatch
  ``client.gateway.<service>.<Method>(dict)`` through ``InvokeJson`` (unary methods only);
- ``client.state``: ``save`` (etag → `ConcurrencyError` on conflict), ``get``, ``get_all``,
  ``register_keys``, ``delete``;
- ``client.pubsub``: ``publish``, ``subscribe``, ``unsubscribe``, ``publish_with_result``
  (correlation id, reply topic, 30 s default timeout);
- ``client.config``: ``list_services``, ``get_service`` (as `ServiceConfig`);
- ``client.workmanager``: the WorkManager's RPCs with its protobuf messages.

`GatewayBridge` is a blocking, thread-safe ``InvokeJson`` with JSON bytes in and out: what the
WorkManager binds to native workers' ``gateway_call``.

The API key comes from the argument or ``VIRTUFIN_API_KEY``; the target from the argument or
``VIRTUFIN_API_HOST``/``VIRTUFIN_API_GRPC_PORT`` (default ``localhost:5002``). Failures raise
`ClientError` with the gRPC status ``code``.

Example:
    >>> async with AsyncClient("localhost:5002") as client:               # doctest: +SKIP
    ...     async with await client.gateway.subscribe(topics=["workmanager.lifecycle"]) as s:
    ...         async for event in s:
    ...             print(event.topic, event.envelope.type)
"""

from virtufin.client._async import (
    DEFAULT_RESULT_TIMEOUT_SECONDS,
    AsyncClient,
    ConfigApi,
    GatewayApi,
    PubsubApi,
    ServiceProxy,
    StateApi,
    WorkManagerApi,
    default_target,
)
from virtufin.client._bridge import DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS, GatewayBridge
from virtufin.client._errors import ClientError
from virtufin.client._streams import READY_HEADER, Event, EventStream
from virtufin.client._sync import Client, SyncEventStream

__all__ = [
    "DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS",
    "DEFAULT_RESULT_TIMEOUT_SECONDS",
    "READY_HEADER",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConfigApi",
    "Event",
    "EventStream",
    "GatewayApi",
    "GatewayBridge",
    "PubsubApi",
    "ServiceProxy",
    "StateApi",
    "SyncEventStream",
    "WorkManagerApi",
    "default_target",
]
