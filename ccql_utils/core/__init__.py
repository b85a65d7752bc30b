"""The science of one run: losses, the WideResNet, CIFAR-100 subsets and packs, the run's
configuration and its trainer (alone, or several small ones stacked as one program)."""
