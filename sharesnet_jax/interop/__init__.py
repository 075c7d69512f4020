"""Interoperation with other weights: torchvision's ResNets (the only code that imports torch,
and only to read a .pth file) and `shareify`, which turns trained unshared weights into the
weights of a ShaResNet twin."""
