"""The serving layer around the INT4 + LoRA linear (SPEC §7): stacked adapter slots, merged output slices and
tensor parallelism, as a third contract (`layer`) that verify judges."""
