"""pix2pix (Isola et al. 2017) as the original project used it: a U-Net that turns a binary nodule mask into a CT patch."""
