"""Make the gateway listen only where GATEWAY_LISTEN says.

LocalStack's twisted server takes only the port from GATEWAY_LISTEN and binds
0.0.0.0 (a TODO in localstack/runtime/server/twisted.py). start.sh asks for
127.0.0.1: an emulator that accepts any credentials should not be reachable from
other hosts. Runs at startup, before the server binds.
"""

from localstack.runtime import hooks


@hooks.on_infra_start()
def immune_bind_gateway_to_listen_host() -> None:
    from localstack import config
    from localstack.runtime.server import twisted as server
    from twisted.internet import endpoints

    hosts = {listen.port: listen.host for listen in config.GATEWAY_LISTEN}

    class BoundEndpoints:
        """Stands in for twisted.internet.endpoints inside LocalStack's server module."""

        TCP6ServerEndpoint = endpoints.TCP6ServerEndpoint

        @staticmethod
        def TCP4ServerEndpoint(reactor, port, **kwargs):
            kwargs.setdefault("interface", hosts.get(port, ""))
            return endpoints.TCP4ServerEndpoint(reactor, port, **kwargs)

    server.endpoints = BoundEndpoints
