"""rankline.pipelines: the pipeline builder, Ray actors, the Ray Serve app, batch jobs and the CLI."""
