"""Backends that apply the controller's decisions: `local` processes or `kubernetes` Deployments."""

from pagefleet.platform.controller.backends.base import Backend, BackendConflict, BackendError

__all__ = ["Backend", "BackendConflict", "BackendError"]
