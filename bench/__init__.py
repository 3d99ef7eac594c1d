"""`python -m bench`: the service's throughput, latency and memory next to raw Redis and Celery.

Every figure is measured in the same run as its baseline (a raw Redis loop, or a plain Celery
app with the service's settings and the stock prefork pool) and reported as a ratio to it.
"""
