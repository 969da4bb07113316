"""The OpenAI Batch API's back end: file storage, batch records and the Celery tasks that feed
a batch's lines into the model queues at priority 2 and collect their results."""
