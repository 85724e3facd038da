"""The web door: waitress, a production WSGI server, on a thread of the serve process."""

from __future__ import annotations

import logging
import threading
from functools import partial

from flask import Flask
from waitress import wasyncore
from waitress.server import create_server

logger = logging.getLogger(__name__)
# A STOW-RS body carries whole studies (waitress's default refuses bodies over 1 GB); waitress
# spools a body to a temporary file, so its size costs disk, not memory. (Kept in memory
# instead, inbuf_overflow 64 MB, a 26 MB body cost more CPU to receive and read back, 28-41
# against 22-23 ms: waitress grows a BytesIO; bench/README.md, "STOW-RS: the copies...".)
MAX_REQUEST_BODY = 16 << 30
# waitress reads a request body 8 KB per turn of its loop: a 26 MB STOW-RS batch took ~0.4 s
# to arrive on loopback (~0.1 s in 256 KB reads), and each turn costs the GIL the store threads
# want. (Keeping answers' pending output in memory, outbuf_overflow past the watermark, did not
# make WADO-RS faster: bench/README.md, "DICOMweb vs Orthanc".)
RECV_BYTES = 256 << 10


class WebDoor:
    """The running HTTP listener (UI, REST, DICOMweb, health)."""

    name = "web"

    def __init__(self, app: Flask) -> None:
        # waitress sets TCP_NODELAY on accepted sockets by default (socket_options).
        self.server = create_server(
            app,
            host=app.config["HTTP_HOST"],
            port=app.config["HTTP_PORT"],
            threads=app.config["HTTP_THREADS"],
            ident="Placa",
            max_request_body_size=MAX_REQUEST_BODY,
            recv_bytes=RECV_BYTES,
            **_proxy_settings(app.config["TRUSTED_PROXY"]),
        )
        self.thread = threading.Thread(target=self.server.run, name="placa-web", daemon=True)
        self.thread.start()
        logger.info("Web door: http://%s:%s/", *self.address)

    @property
    def address(self) -> tuple[str, int]:
        return str(self.server.effective_host), int(self.server.effective_port)

    def is_up(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        # Let requests in progress finish, then close every channel from waitress's own
        # loop thread (closing them from this thread races with the loop's poll).
        self.server.task_dispatcher.shutdown(timeout=5)
        try:
            self.server.trigger.pull_trigger(partial(wasyncore.close_all, self.server._map))
        except OSError as exc:  # the loop's wake-up pipe is gone: close from here instead
            logger.warning("Web door: cannot wake its loop (%s); closing its channels", exc)
            wasyncore.close_all(self.server._map)
        self.thread.join(timeout=5)


def _proxy_settings(trusted_proxy: str) -> dict[str, object]:
    """Believe X-Forwarded-* only from the configured reverse proxy; drop them otherwise.

    Sign-in throttling and the audit log need the client's address, not the proxy's.
    """
    if not trusted_proxy:
        return {"clear_untrusted_proxy_headers": True}
    return {
        "trusted_proxy": trusted_proxy,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"},
        "clear_untrusted_proxy_headers": True,
    }
