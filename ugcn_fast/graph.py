"""Skeleton graphs and their ST-GCN adjacency (SPEC §2).

`Graph(...).A` is the (K, V, V) adjacency an ST-GCN block aggregates with, computed exactly as ST-GCN's reference
graph code computes it: self-loops plus bone edges, hop distances up to `max_hop` (longer ones are infinite, also
when comparing distances to the centre), column normalisation, then the partition strategy. For the Human3.6M
skeleton with the hip as centre the spatial subsets have 17, 26 and 6 non-zero entries.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ._checks import is_int

# Joint orders and bones (child, parent) of the layouts the package knows; "left" / "right" list the mirrored
# joints (the i-th left joint is the mirror of the i-th right one), which horizontal flips swap.
H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M_LEFT = (4, 5, 6, 11, 12, 13)
H36M_RIGHT = (1, 2, 3, 14, 15, 16)

LAYOUTS: dict[str, dict] = {
    # Human3.6M, VideoPose3D order (SPEC §2); centre: the hip.
    "h36m": {"num_nodes": 17, "center": 0,
             "edges": [(j, p) for j, p in enumerate(H36M_PARENTS) if p >= 0],
             "left": H36M_LEFT, "right": H36M_RIGHT},
    # COCO-17 keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles); centre: the nose,
    # the only joint every body part reaches through the head-shoulder bones.
    "coco": {"num_nodes": 17, "center": 0,
             "edges": [(1, 0), (2, 0), (3, 1), (4, 2), (5, 0), (6, 0), (7, 5), (9, 7), (8, 6), (10, 8),
                       (11, 5), (12, 6), (12, 11), (13, 11), (15, 13), (14, 12), (16, 14)],
             "left": (1, 3, 5, 7, 9, 11, 13, 15), "right": (2, 4, 6, 8, 10, 12, 14, 16)},
    # MPI-INF-3DHP 17-joint test layout (head top, neck, right arm, left arm, right leg, left leg, pelvis 14,
    # spine 15, head 16); centre: pelvis.
    "mpi_inf_3dhp": {"num_nodes": 17, "center": 14,
                     "edges": [(0, 16), (16, 1), (1, 15), (15, 14), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5),
                               (7, 6), (8, 14), (9, 8), (10, 9), (11, 14), (12, 11), (13, 12)],
                     "left": (5, 6, 7, 11, 12, 13), "right": (2, 3, 4, 8, 9, 10)},
    # NTU RGB+D 25 joints (ST-GCN's "ntu-rgb+d" layout, 0-based); centre: the spine joint 20.
    "ntu": {"num_nodes": 25, "center": 20,
            "edges": [(a - 1, b - 1) for a, b in [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6),
                                                   (8, 7), (9, 21), (10, 9), (11, 10), (12, 11), (13, 1),
                                                   (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
                                                   (20, 19), (22, 23), (23, 8), (24, 25), (25, 12)]],
            "left": (4, 5, 6, 7, 12, 13, 14, 15, 21, 22), "right": (8, 9, 10, 11, 16, 17, 18, 19, 23, 24)},
}

STRATEGIES = ("uniform", "distance", "spatial")


def hop_distance(num_nodes: int, edges: Sequence[tuple[int, int]], max_hop: int = 1) -> np.ndarray:
    """Hop distance between every two joints, inf beyond max_hop (ST-GCN's get_hop_distance)."""
    adjacency = np.zeros((num_nodes, num_nodes))
    for i, j in edges:
        adjacency[i, j] = adjacency[j, i] = 1
    distance = np.full((num_nodes, num_nodes), np.inf)
    reach = [np.linalg.matrix_power(adjacency, d) > 0 for d in range(max_hop + 1)]
    for d in range(max_hop, -1, -1):
        distance[reach[d]] = d
    return distance


def normalize_columns(adjacency: np.ndarray) -> np.ndarray:
    """Each column divided by its degree (ST-GCN's normalize_digraph)."""
    degree = adjacency.sum(axis=0)
    inverse = np.where(degree > 0, 1.0 / np.where(degree > 0, degree, 1.0), 0.0)
    return adjacency * inverse[None, :]


class Graph:
    """The (K, V, V) adjacency of a skeleton for ST-GCN blocks.

    Either a known `layout` ("h36m", "coco", "mpi_inf_3dhp", "ntu") or your own `num_nodes` and `edges`
    (pairs of joint indices; self-loops are added). `strategy`: "spatial" (root / centripetal / centrifugal,
    K = 3 with max_hop = 1), "distance" (one subset per hop) or "uniform" (K = 1). `center`: the centre joint of
    the spatial strategy (default: the layout's). `left` / `right`: the mirrored joints of a known layout (None
    for a custom graph).
    """

    def __init__(self, layout: str | None = "h36m", strategy: str = "spatial", center: int | None = None,
                 max_hop: int = 1, dilation: int = 1, num_nodes: int | None = None,
                 edges: Sequence[tuple[int, int]] | None = None):
        if edges is not None or num_nodes is not None:
            if edges is None or num_nodes is None:
                raise ValueError("a custom graph needs both num_nodes and edges")
            layout = None
        elif layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(LAYOUTS)} (or pass num_nodes and edges), got {layout!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if not is_int(max_hop) or max_hop < 1:
            raise ValueError(f"max_hop must be an int >= 1, got {max_hop!r}")
        if not is_int(dilation) or dilation < 1:
            raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
        max_hop, dilation = int(max_hop), int(dilation)
        if layout is None:
            if isinstance(edges, (torch.Tensor, np.ndarray)):
                edges = edges.tolist()  # an (E, 2) index tensor or array
            edges = list(edges) if hasattr(edges, "__iter__") else edges
            if not isinstance(edges, list) or not all(hasattr(e, "__len__") for e in edges):
                raise TypeError(f"edges must be a sequence of (i, j) joint index pairs, got {edges!r}")
        spec = LAYOUTS[layout] if layout is not None else {"num_nodes": num_nodes, "edges": edges, "center": 0}
        V = spec["num_nodes"]
        if not is_int(V) or V < 1:
            raise ValueError(f"num_nodes must be an int >= 1, got {V!r}")
        V = int(V)
        for edge in spec["edges"]:
            if len(edge) != 2 or not all(is_int(k) and 0 <= k < V for k in edge):
                raise ValueError(f"edges must be pairs of joint indices in [0, {V}), got {edge!r}")
        center = spec["center"] if center is None else center
        if not is_int(center) or not 0 <= center < V:
            raise ValueError(f"center must be a joint index in [0, {V}), got {center!r}")
        center = int(center)
        self.layout, self.strategy, self.center, self.max_hop, self.dilation = layout, strategy, center, max_hop, dilation
        # the joints a horizontal flip swaps; unknown for a custom graph
        self.left, self.right = (spec["left"], spec["right"]) if layout is not None else (None, None)
        self.num_nodes = V
        self.edges = [(int(i), int(i)) for i in range(V)] + [(int(a), int(b)) for a, b in spec["edges"]]
        self.hop_dis = hop_distance(V, self.edges, max_hop)
        self.A = torch.from_numpy(self._partition()).to(torch.float32)

    def _partition(self) -> np.ndarray:
        V, hop_dis, center = self.num_nodes, self.hop_dis, self.center
        valid_hops = range(0, self.max_hop + 1, self.dilation)
        adjacency = np.zeros((V, V))
        for hop in valid_hops:
            adjacency[hop_dis == hop] = 1
        normalized = normalize_columns(adjacency)
        if self.strategy == "uniform":
            return normalized[None]
        if self.strategy == "distance":
            return np.stack([np.where(hop_dis == hop, normalized, 0.0) for hop in valid_hops])
        subsets = []
        for hop in valid_hops:
            root, closer, further = np.zeros((V, V)), np.zeros((V, V)), np.zeros((V, V))
            for i in range(V):
                for j in range(V):
                    if hop_dis[j, i] != hop:
                        continue
                    # inf == inf: joints beyond max_hop of the centre count as equally far (ST-GCN's behaviour)
                    if hop_dis[j, center] == hop_dis[i, center]:
                        root[j, i] = normalized[j, i]
                    elif hop_dis[j, center] > hop_dis[i, center]:
                        closer[j, i] = normalized[j, i]
                    else:
                        further[j, i] = normalized[j, i]
            if hop == 0:
                subsets.append(root)
            else:
                subsets += [root + closer, further]
        return np.stack(subsets)

    def __repr__(self) -> str:
        name = self.layout or f"custom(V={self.num_nodes})"
        return f"Graph({name}, strategy={self.strategy!r}, center={self.center}, A={tuple(self.A.shape)})"
