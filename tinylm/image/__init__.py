"""Image tools around the qkvae family: image files in and out, quadtree token streams, training,
the efficiency lab and the `tinylm image` subcommands (`tinylm.image.cli`, torch-free at import)."""
