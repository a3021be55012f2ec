"""The passes of the detection chain, each a block function on a tile (t, c, h, w)."""
