"""rankline.pipelines: the one retrieve → rerank executor (in-process, Ray actors, Serve, rerank jobs),
the pipeline builder, pipeline files, the Ray Serve app and the `rankline` CLI."""
