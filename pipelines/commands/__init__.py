"""One module per `rankline` subcommand. Each defines HELP (one line), add_arguments(parser) and
run(args) -> int, and imports heavy libraries only inside run() so that `rankline --help` is instant."""
