"""Training-speed methods of the `training` family (`train-to-target` workloads): one file each."""
