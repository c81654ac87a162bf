"""Golem's REST API served by the node: market, activity, payment, net (as far as supported), /me and /version.

Request and response models live here, next to the routes; nothing here talks to the
network itself — every call goes to an actor through its proxy, from a worker thread.
"""

from __future__ import annotations

from node.api.server import ApiServer

__all__ = ["ApiServer"]
