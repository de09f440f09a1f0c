"""Method-independent machinery: the training loop (:mod:`~dapo.engine.train`) and its recipe
(:mod:`~dapo.methods.recipe`), inference (:mod:`~dapo.engine.inference`), checkpoints and their
write-once store, and data-parallel runs (:mod:`~dapo.engine.distributed`). It drives any model
of :mod:`dapo.methods` through the method contract (:mod:`dapo.methods.contract`)."""
