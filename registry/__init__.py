"""The contract between fitting and serving: line kinds, the typed model card, the model store, the loaders
that rebuild a line's model from it, and the revisions that derive new versions. No Ray or HTTP, and no
torch at import (light processes read cards and stores)."""
