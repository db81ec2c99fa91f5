"""What the design's contract fixes, for every test that checks it: the metric family names."""

#: Prometheus families the service exports (counters with their ``_total`` sample suffix).
METRIC_FAMILIES = frozenset(
    {
        "resnet_serve_requests_total",
        "resnet_serve_request_duration_seconds",
        "resnet_serve_images_total",
        "resnet_serve_queue_depth",
        "resnet_serve_batch_size",
        "resnet_serve_queue_wait_seconds",
        "resnet_serve_preprocess_seconds",
        "resnet_serve_inference_seconds",
        "resnet_serve_model_info",
    }
)
