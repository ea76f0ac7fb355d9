"""Virtufin's live services: `gateway`, `workmanager` (and, beside them, `marketdata`, `execution`).

Each service is a package named by the ``module`` field of its ``services.json`` entry. The
serve convention, which `virtufin serve <name>` (`virtufin/cli/serve.py`) relies on:

- the module (``services.gateway``), or ``pkg.mod:function``, exposes
  ``async def serve(ctx: ServiceContext) -> None``;
- the bootstrap (`services.bootstrap`) builds the `ServiceContext` before calling it: the
  service's config (``services.json`` + environment + flags), the process `Settings`, a grpc.aio
  server bound to its port with the auth, correlation and metrics interceptors, health (all
  NOT_SERVING) and JSON logging;
- ``serve`` opens its adapters through the context (``await ctx.open_state()``,
  ``await ctx.open_bus(...)``; the context closes them at shutdown, last opened first),
  registers its servicers with ``ctx.add_servicer(...)`` and ends with
  ``await ctx.run(startup=...)``, which starts the server, runs ``startup`` (recovery) while
  health says NOT_SERVING, flips health to SERVING and returns after a graceful shutdown.

Example:
    >>> async def serve(ctx: ServiceContext) -> None:            # doctest: +SKIP
    ...     ctx.add_servicer(echo_pb2_grpc.add_EchoServicer_to_server, Echo(),
    ...                      echo_pb2.DESCRIPTOR.services_by_name["Echo"])
    ...     await ctx.run()
"""

__all__: list[str] = []
