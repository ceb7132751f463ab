"""Which weights embed a library's photos: the backbone of its current representation.

A library records every version of its vector space (schema.Representation); the current one's
weights embed new photos and queries. A person who indexes with the backbone's own weights (no
`--weights`) after `lookalike tune` gets the tuned weights that descend from them, not a refusal.
"""

from __future__ import annotations

import logging

from indexer.backbone import Backbone
from indexer.library import Library, LibraryError
from indexer.schema import Representation

log = logging.getLogger(__name__)


def representation_backbone(
    library: Library, representation: Representation, *, device: str = "auto", precision: str = "auto"
) -> Backbone:
    """A Backbone with the weights of `representation`. Raises LibraryError if they are gone or differ."""
    from indexer.backbone import BackboneError

    weights = library.representation_weights(representation)
    try:
        backbone = Backbone(representation.backbone, weights=weights, device=device, precision=precision)
    except BackboneError as e:
        raise LibraryError(f"representation {representation.id} of {library.path} cannot be loaded: {e}") from None
    if backbone.weights_identity != representation.weights:
        raise LibraryError(
            f"representation {representation.id} of {library.path} was {representation.weights}, but its "
            f"weights file {weights} is now {backbone.weights_identity}: the file changed"
        )
    return backbone


def backbone_for_library(library: Library, backbone: Backbone) -> Backbone:
    """The backbone that embeds new photos into `library` when `backbone` was asked for.

    `backbone` itself, unless the library's current representation was tuned from it: then a
    Backbone with the tuned weights on the same device and precision. A backbone the library
    never used comes back unchanged, for `check_library` to refuse (or `--reembed` to adopt).
    """
    current = library.current_representation()
    if current is None or current.parent_id is None:
        return backbone
    if (backbone.name, backbone.weights_identity) == (current.backbone, current.weights):
        return backbone
    root = library.root_representation(current)
    if (backbone.name, backbone.weights_identity) != (root.backbone, root.weights):
        return backbone
    log.info("embedding with %s's current representation %d (tuned from %s)", library.path, current.id,
             backbone.weights_identity)
    return representation_backbone(library, current, device=backbone.device_name, precision=backbone.precision)
