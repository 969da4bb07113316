"""The Celery app of the batch side: Redis (the gateway's) as broker; what both sides share.

The gateway only sends `step` tasks (`send_step`); `tasks.py` registers and runs them, and the
file-retention sweep (`send_expire_files`), which the batch workers keep going themselves.
"""

from __future__ import annotations

from celery import Celery

from pagefleet.platform.batch.settings import BatchSettings

STEP_TASK = "pagefleet.batch.step"
EXPIRE_FILES_TASK = "pagefleet.batch.expire_files"
QUEUE = "pagefleet-batch"


def create_celery(redis_url: str, settings: BatchSettings) -> Celery:
    """The app both sides use: the gateway only sends tasks, the batch worker runs them."""
    app = Celery("pagefleet-batch", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
    )
    return app


def send_step(app: Celery, batch_id: str, countdown: float | None = None) -> None:
    app.send_task(STEP_TASK, args=[batch_id], queue=QUEUE, countdown=countdown)


def send_expire_files(app: Celery, countdown: float | None = None) -> None:
    app.send_task(EXPIRE_FILES_TASK, queue=QUEUE, countdown=countdown)
