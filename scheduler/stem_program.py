"""Exact Lagrangian values of one stem tree, and a walk over its stem rates (DESIGN §3).

With a price `lam` on the budget, the best `score - lam * cost` of the apps of one stem tree
(a camera: its decode segment, then one chain of base segments per base model) is an exact
dynamic programme, because of two facts:

- Stem rates never rise with depth, so an option on segment s is usable iff s itself runs at
  least at the option's rate: what an app can use depends on each segment's own rate only.
- An app's value is then the best, over the segments of its chain, of the best option on
  that segment within the segment's rate. Walking a chain from its deepest segment up with
  the segment's rate as state, the programme also carries the *set of apps already served*
  by a deeper segment; an app is served exactly once, where its chosen option lies. Taking
  the maximum over where each app is served gives exactly the sum of the apps' best values.

Chains under one root share nothing but the root's rate, and the sets are per chain, so the
tables are `2^k` wide for the k apps of one chain and base, not of the whole camera. A chain
with more than `GROUP_LIMIT` apps is split into groups that each pay an equal share of the
chain's stem: still an upper bound, no longer exact (`TreeLayout.exact`).

Why this matters: the stem-rate search this replaced bounded the shared stem by the largest
stem any single app needs, with a budget price picked while ignoring the stem. On the
original paper's data (flat accuracy curves, so the deepest cuts are as good as the
shallowest and their branches cost almost nothing) that price came out near zero and the
stem was nearly free in every bound: the root bound of the stall case was 0.91 against an
optimum of 0.636, and almost nothing was pruned above the tenth of thirteen segments. The
programme's values are exact for any price, so the Lagrangian dual over the price is the
best bound of its kind (0.656 there), and the walk below prunes with it.

`StaircaseWalk` visits stem rates from the root down (the root's rate, then each chain's
segments from the top); for a partial choice the tables give the exact best completion, for
a whole grid of prices at once. The solver (search.py) uses it three ways: following the best
child reconstructs the optimum for one price; a depth-first search pruned with the smallest
bound over the prices visits every full stem choice that could still beat a floor.

Pure logic: numpy only, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scheduler.arrays import SearchArrays
from scheduler.deadline import Deadline

GROUP_LIMIT = 8
"""Most apps of one chain in one subset table (its width is 2 ** apps)."""

TABLE_CELLS = 6_000_000
"""Floats the tables of one part may hold; fewer prices are tabled at once when wider."""

IMPOSSIBLE = -1e9
"""The value of a choice that does not exist (finite, so that sums stay well defined)."""


@dataclass(frozen=True)
class AppGroup:
    """Apps whose served set one table tracks: apps of one chain, or apps with none.

    `chain` indexes `TreeLayout.chains` (-1: the apps only use the root or no stem at all);
    `share` is the part of the chain's stem cost the group's table charges.
    """

    chain: int
    apps: np.ndarray
    share: float


@dataclass(frozen=True)
class TreeLayout:
    """The stem tree of one part: a root segment and the chains hanging below it."""

    root: int  # -1: the part needs no costly segment at all
    chains: tuple[tuple[int, ...], ...]  # segments from just below the root to the deepest
    groups: tuple[AppGroup, ...]

    @property
    def exact(self) -> bool:
        """Whether the tables' values are exact (no chain split into groups)."""
        return all(group.share == 1.0 for group in self.groups)

    def chain_groups(self, chain: int) -> list[int]:
        return [index for index, group in enumerate(self.groups) if group.chain == chain]


def tree_layout(arrays: SearchArrays, allowed: np.ndarray) -> TreeLayout:
    """Root, chains and app groups of a part with at most one stem tree.

    `search_arrays` builds each camera's segments as a decode root with one chain per base
    model (or, without decode cost, one chain per camera and base whose top is the root), so
    every segment below the root has at most one child.
    """
    roots = np.nonzero(arrays.parent < 0)[0].tolist()
    if len(roots) > 1:
        raise ValueError("a part has at most one stem tree")
    root = int(roots[0]) if roots else -1
    chains: list[tuple[int, ...]] = []
    if root >= 0:
        for top in arrays.children[root]:
            chain = [top]
            while arrays.children[chain[-1]]:
                if len(arrays.children[chain[-1]]) != 1:
                    raise ValueError("below the root, stem segments form chains")
                chain.append(arrays.children[chain[-1]][0])
            chains.append(tuple(chain))
    chain_of_segment = np.full(arrays.num_segments + 1, -1)  # last entry: segment -1
    for index, segments in enumerate(chains):
        chain_of_segment[list(segments)] = index
    members: dict[int, list[int]] = {}
    for app in range(arrays.num_apps):
        used = set(chain_of_segment[arrays.segment[app, allowed[app]]].tolist()) - {-1}
        if len(used) > 1:
            raise ValueError("an app's options lie on one chain")
        members.setdefault(used.pop() if used else -1, []).append(app)

    groups: list[AppGroup] = []
    for chain_index, chain_apps in sorted(members.items()):
        if chain_index < 0:  # nothing shared but the root: each app alone
            groups.extend(AppGroup(-1, np.array([app]), 1.0) for app in chain_apps)
            continue
        count = -(-len(chain_apps) // GROUP_LIMIT)
        for part in np.array_split(np.array(chain_apps), count):
            groups.append(AppGroup(chain_index, part, 1.0 / count))
    return TreeLayout(root=root, chains=tuple(chains), groups=tuple(groups))


def layout_key(arrays: SearchArrays, layout: TreeLayout) -> tuple[object, ...]:
    """Parts with equal keys have the same shape and can share one batch of tables."""
    groups = tuple(
        (group.chain, tuple(group.apps.tolist()), group.share) for group in layout.groups
    )
    shape = (arrays.num_apps, arrays.num_segments, len(arrays.levels))
    return (shape, layout.root, layout.chains, groups)


@dataclass(frozen=True)
class PartTables:
    """The tables of one part, at the prices `lams` (views into a `StemTables` batch).

    `best[g][j][m, S, l]`: for group g, the best value of its chain's segments at depth >= j
    (0 = just below the root) when segment j runs at a rate of at most level l, the apps in
    subset S are served there and price m applies (stem costs at the group's share).
    `top[g][m, l]` is the group's whole value with the root at level l; `gain[m, a, s, l]`
    the best value of app a's options on segment s (index `segments`: none) within level l.
    """

    arrays: SearchArrays
    layout: TreeLayout
    lams: np.ndarray
    gain: np.ndarray
    before_chain: np.ndarray  # (m, apps, levels): served by the root or without stem
    useful: np.ndarray  # (segments, levels): levels worth trying per segment
    unserved: list[np.ndarray]  # per group: (2^k, k), 1 where the app is not in the subset
    best: list[list[np.ndarray]]
    top: list[np.ndarray]

    def root_values(self) -> np.ndarray:
        """(prices, levels): the part's best value with the root at each level."""
        total = sum(self.top, start=np.zeros((len(self.lams), len(self.arrays.levels))))
        if self.layout.root < 0:
            return np.broadcast_to(total[:, :1], total.shape).copy()
        root_stem = self.arrays.weight[self.layout.root] * self.arrays.levels
        result: np.ndarray = total - self.lams[:, None] * root_stem[None, :]
        return result

    def values(self) -> np.ndarray:
        """(prices,): the part's best `score - lam * cost` (an upper bound unless exact)."""
        result: np.ndarray = np.max(self.root_values(), axis=1)
        return result


@dataclass(frozen=True)
class PartOptions:
    """One part's options as the tables read them: what does not depend on the prices, so
    computed once per part however many rounds of prices follow.

    `score[a, s, l]` and `cost[a, s, l]`: app a's option on segment s (index `segments`: no
    costly segment) at level l (IMPOSSIBLE and 0 where it has none; an app has at most one
    option per segment and rate, search_arrays keeps the best); `useful[s, l]`: the levels
    worth trying per segment, 0 and the rates of allowed options below it.
    """

    score: np.ndarray
    cost: np.ndarray
    useful: np.ndarray


def part_options(arrays: SearchArrays, allowed: np.ndarray) -> PartOptions:
    allowed = allowed & arrays.valid
    segments, levels = arrays.num_segments, len(arrays.levels)
    apps, columns = np.nonzero(allowed)
    on_segment = arrays.segment[apps, columns]
    level = arrays.level[apps, columns]
    on = np.where(on_segment < 0, segments, on_segment)
    score = np.full((arrays.num_apps, segments + 1, levels), IMPOSSIBLE)
    cost = np.zeros((arrays.num_apps, segments + 1, levels))
    score[apps, on, level] = arrays.score[apps, columns]
    cost[apps, on, level] = arrays.cost[apps, columns]
    useful = np.zeros((segments, levels), dtype=bool)
    useful[:, 0] = True
    option, below = np.nonzero(arrays.needs[on_segment])  # segment -1 reads the empty last row
    useful[below, level[option]] = True
    return PartOptions(score=score, cost=cost, useful=useful)


class StemTables:
    """The programme's tables for several parts of one shape, at several prices at once.

    Rows are (part, price) pairs, part-major: one pass of numpy work serves every camera of a
    fleet whose cameras look alike, which is what keeps hundreds of apps fast.
    """

    def __init__(
        self,
        parts: list[tuple[SearchArrays, np.ndarray]],
        layout: TreeLayout,
        lams: np.ndarray,
        options: list[PartOptions] | None = None,
        for_walks: bool = True,
    ) -> None:
        """`options`: `part_options` of each part when the caller keeps them. Without
        `for_walks` only the values are kept (`values`, `PartTables.top`), not the tables
        below the root a walk reads: a fraction of the memory, so more rows at once."""
        self.parts = [(arrays, allowed & arrays.valid) for arrays, allowed in parts]
        self.layout = layout
        self.lams = np.asarray(lams, dtype=float)
        if options is None:
            options = [part_options(arrays, allowed) for arrays, allowed in self.parts]
        first = self.parts[0][0]
        levels = first.levels
        num_prices, num_levels = len(self.lams), len(levels)
        segments, num_apps = first.num_segments, first.num_apps
        rows = len(self.parts) * num_prices
        row_lams = np.tile(self.lams, len(self.parts))

        # The arrays keep the rows last: every numpy step then runs over long contiguous
        # stretches of (part, price) rows, several times faster than over the short level
        # axis. `PartTables` sees them transposed back (views, no copies).
        # gain[a, s, l, r]: best score - lam * cost of app a's options on segment s (the last
        # index stands for "no costly segment") with rate at most level l.
        score = np.stack([part.score for part in options], axis=-1)[..., None]
        gain = np.stack([part.cost for part in options], axis=-1)[..., None] * self.lams
        np.subtract(score, gain, out=gain)
        gain = gain.reshape(num_apps, segments + 1, num_levels, rows)
        weights = np.repeat(np.stack([arrays.weight for arrays, _ in self.parts]), num_prices, 0)
        self.useful = np.stack([part.useful for part in options])
        self.gain = _prefix_max(gain, axis=2)
        root_gain = (
            self.gain[:, layout.root]
            if layout.root >= 0
            else np.full((num_apps, num_levels, rows), IMPOSSIBLE)
        )
        self.before_chain = np.maximum(root_gain, self.gain[:, segments, -1:])  # (a, l, r)

        self.unserved: list[np.ndarray] = []
        self.best: list[list[np.ndarray]] = []  # per group and depth: (subsets, levels, rows)
        self.top: list[np.ndarray] = []  # per group: (rows, levels)
        for group in layout.groups:
            size = len(group.apps)
            subsets = np.arange(2**size)
            unserved = (((subsets[:, None] >> np.arange(size)[None, :]) & 1) == 0).astype(float)
            self.unserved.append(unserved)
            chain = layout.chains[group.chain] if group.chain >= 0 else ()
            table = np.full((2**size, num_levels, rows), IMPOSSIBLE)
            table[0] = 0.0
            tables = [table.copy()] if for_walks else []
            for segment in reversed(chain):
                price = group.share * weights[:, segment] * row_lams
                stem = levels[None, :, None] * price[None, None, :]
                table = table - stem if for_walks else np.subtract(table, stem, out=table)
                _serve(table, self.gain[group.apps, segment])
                table = _prefix_max(table, axis=1)
                tables.append(table)
            tables.reverse()  # tables[j]: segments at depth >= j; tables[len(chain)]: none
            self.best.append(tables if for_walks else [])
            served = np.ascontiguousarray(self.before_chain[group.apps].transpose(2, 0, 1))
            completion = np.matmul(unserved[None], served)  # (rows, subsets, levels)
            self.top.append(np.max(table.transpose(2, 0, 1) + completion, axis=1))

        # What the parts see, rows first again: copied when walks will read it piece by piece
        # (contiguous pieces are faster to gather than strided ones), else views.
        arrange = np.ascontiguousarray if for_walks else np.asarray
        self.gain = arrange(self.gain.transpose(3, 0, 1, 2))
        self.before_chain = arrange(self.before_chain.transpose(2, 0, 1))
        self.best = [
            [arrange(table.transpose(2, 0, 1)) for table in tables] for tables in self.best
        ]

    def part(self, index: int) -> PartTables:
        rows = slice(index * len(self.lams), (index + 1) * len(self.lams))
        arrays = self.parts[index][0]
        return PartTables(
            arrays=arrays,
            layout=self.layout,
            lams=self.lams,
            gain=self.gain[rows],
            before_chain=self.before_chain[rows],
            useful=self.useful[index],
            unserved=self.unserved,
            best=[[table[rows] for table in tables] for tables in self.best],
            top=[top[rows] for top in self.top],
        )

    def values(self) -> np.ndarray:
        """(parts, prices): each part's best `score - lam * cost` (exact unless split)."""
        return np.vstack([self.part(index).values() for index in range(len(self.parts))])


def _prefix_max(values: np.ndarray, axis: int) -> np.ndarray:
    """Running maximum along the (short) level axis `axis`, in place (faster than
    ufunc.accumulate there)."""
    moved = np.moveaxis(values, axis, 0)
    for level in range(1, moved.shape[0]):
        np.maximum(moved[level], moved[level - 1], out=moved[level])
    return values


def _serve(table: np.ndarray, gain: np.ndarray) -> None:
    """In place: let every app not yet served be served here, at `gain[a, l, r]`
    (`table[S, l, r]`, subsets first)."""
    width = table.shape[0]
    for bit in range(gain.shape[0]):
        view = table.reshape(width // (2 * 2**bit), 2, 2**bit, *table.shape[1:])
        np.maximum(view[:, 1], view[:, 0] + gain[bit][None, None], out=view[:, 1])


@dataclass
class _Node:
    """A partial choice of stem rates, from the root down; `chain` -1: the root is next."""

    bound: float
    chain: int
    depth: int
    ceiling: int  # level of the segment above: this one runs no faster
    fixed: np.ndarray  # (prices,): stem paid so far plus the values of finished groups
    served: list[np.ndarray]  # per group of `chain`: (prices, apps) best value so far
    later: np.ndarray  # (prices,): exact values of the chains after `chain`
    sigma: np.ndarray  # level of every segment fixed so far


LeafHandler = Callable[[np.ndarray, np.ndarray], float]
"""Called with the stem rates of a full choice and its exact value at each price (the apps'
best options under those rates, stem paid); returns the (new) floor."""


class StaircaseWalk:
    """Stem-rate choices of one part, visited from the root down with exact completions.

    A node's value at price m is exact: its fixed part plus the tables' best completion.
    `offset[m]` turns values into bounds on the whole problem's objective
    (`lam_m * limit + the other parts' values`); a node's bound is the smallest over m.
    """

    def __init__(self, tables: PartTables) -> None:
        self.tables = tables
        layout = tables.layout
        self.order = [index for index, chain in enumerate(layout.chains) if chain]
        self.groups_of = {chain: layout.chain_groups(chain) for chain in self.order}
        self.pseudo = layout.chain_groups(-1)
        self.root_values = tables.root_values()
        # Value of each chain (all its groups) by root level, per price.
        self.chain_top = {
            chain: sum(
                (tables.top[group] for group in self.groups_of[chain]),
                start=np.zeros_like(self.root_values),
            )
            for chain in self.order
        }
        self.nodes = 0
        self.leaves = 0
        # Children of nodes already expanded: repeated searches (lower floors) reuse them.
        self._expanded: dict[tuple[int, int, bytes], tuple[np.ndarray, Callable[[int], _Node]]] = {}

    def _root(self) -> _Node:
        size = len(self.tables.lams)
        return _Node(
            bound=np.inf,
            chain=-1,
            depth=0,
            ceiling=len(self.tables.arrays.levels) - 1,
            fixed=np.zeros(size),
            served=[],
            later=np.zeros(size),
            sigma=np.zeros(self.tables.arrays.num_segments, dtype=np.int64),
        )

    def _children(self, node: _Node) -> tuple[np.ndarray, np.ndarray, Callable[[int], _Node]]:
        """Levels to try next, their exact values (prices, levels) and a child maker."""
        tables, layout = self.tables, self.tables.layout
        lams, levels = tables.lams, tables.arrays.levels
        if node.chain < 0:  # the root's level
            if layout.root < 0:
                candidates = np.zeros(1, dtype=np.int64)
            else:
                candidates = np.nonzero(tables.useful[layout.root])[0]
            values = self.root_values[:, candidates]

            def make_root_child(index: int) -> _Node:
                level = int(candidates[index])
                sigma = node.sigma.copy()
                stem = np.zeros(len(lams))
                if layout.root >= 0:
                    sigma[layout.root] = level
                    stem = lams * tables.arrays.weight[layout.root] * levels[level]
                fixed = sum((tables.top[g][:, level] for g in self.pseudo), start=-stem)
                return self._enter_chain(0, level, fixed, sigma, float(node.bound))

            return candidates, values, make_root_child

        chain = self.order[node.chain]
        segment = layout.chains[chain][node.depth]
        last = node.depth + 1 == len(layout.chains[chain])
        useful = tables.useful[segment, : node.ceiling + 1]
        candidates = np.nonzero(useful)[0]
        stem = lams[:, None] * (tables.arrays.weight[segment] * levels[candidates])[None, :]
        values = node.fixed[:, None] - stem + node.later[:, None]
        served_next = []
        for position, group in enumerate(self.groups_of[chain]):
            apps = layout.groups[group].apps
            here = tables.gain[:, apps, segment, :][:, :, candidates]
            served = np.maximum(node.served[position][:, :, None], here)  # (m, apps, cands)
            served_next.append(served)
            if last:
                values = values + served.sum(axis=1)
            else:
                best = tables.best[group][node.depth + 1][:, :, candidates]
                values = values + _completion_at(tables, group, best, served)

        def make_child(index: int) -> _Node:
            level = int(candidates[index])
            sigma = node.sigma.copy()
            sigma[segment] = level
            fixed = node.fixed - stem[:, index]
            served = [values_[:, :, index] for values_ in served_next]
            if not last:
                return _Node(
                    bound=np.inf,
                    chain=node.chain,
                    depth=node.depth + 1,
                    ceiling=level,
                    fixed=fixed,
                    served=served,
                    later=node.later,
                    sigma=sigma,
                )
            fixed = fixed + sum((part.sum(axis=1) for part in served), start=np.zeros_like(fixed))
            root_level = int(sigma[layout.root])
            return self._enter_chain(node.chain + 1, root_level, fixed, sigma, np.inf)

        return candidates, values, make_child

    def _enter_chain(
        self, position: int, root_level: int, fixed: np.ndarray, sigma: np.ndarray, bound: float
    ) -> _Node:
        """The node that starts chain `order[position]` (or a leaf past the last chain)."""
        if position == len(self.order):
            return _Node(bound, len(self.order), 0, root_level, fixed, [], fixed * 0, sigma)
        chain = self.order[position]
        served = [
            self.tables.before_chain[:, self.tables.layout.groups[g].apps, root_level]
            for g in self.groups_of[chain]
        ]
        later = sum(
            (self.chain_top[c][:, root_level] for c in self.order[position + 1 :]),
            start=np.zeros(len(self.tables.lams)),
        )
        return _Node(bound, position, 0, root_level, fixed, served, later, sigma)

    def is_leaf(self, node: _Node) -> bool:
        return node.chain == len(self.order)

    def _expand(self, node: _Node) -> tuple[np.ndarray, Callable[[int], _Node]]:
        """A node's children's values and maker, computed once per node (searches with
        lower floors, and reconstructions at several prices, meet the same nodes)."""
        key = (node.chain, node.depth, node.sigma.tobytes())
        if key not in self._expanded:
            _, values, maker = self._children(node)
            self._expanded[key] = (values, maker)
        return self._expanded[key]

    def best_levels(self, prices: list[int]) -> list[np.ndarray]:
        """The stem levels of a best choice at each of `prices` (exact when the layout is),
        in one descent: prices that pick the same child share it."""
        found: dict[int, np.ndarray] = {}
        stack = [(self._root(), list(prices))]
        while stack:
            node, group = stack.pop()
            if self.is_leaf(node):
                found.update((price, node.sigma) for price in group)
                continue
            values, make_child = self._expand(node)
            picks = np.argmax(values[group], axis=1).tolist()
            for pick in sorted(set(picks)):
                following = [price for price, own in zip(group, picks, strict=True) if own == pick]
                stack.append((make_child(pick), following))
        return [found[price] for price in prices]

    def search(
        self, offset: np.ndarray, floor: float, on_leaf: LeafHandler, deadline: Deadline
    ) -> tuple[bool, float]:
        """Visit, depth first, every full choice whose bound beats `floor`.

        Bounds are `min_m offset[m] + value[m]`, best child first. `on_leaf` may raise the
        floor. Returns whether the walk finished, and an upper bound on what it did not
        visit (the floor when it finished).
        """
        stack = [self._root()]
        while stack:
            if deadline.expired():
                open_bound = max(node.bound for node in stack)
                return False, max(floor, open_bound)
            node = stack.pop()
            if node.bound <= floor:
                continue
            self.nodes += 1
            if self.is_leaf(node):
                self.leaves += 1
                rates = self.tables.arrays.levels[node.sigma]
                floor = max(floor, on_leaf(rates, node.fixed))
                continue
            values, make_child = self._expand(node)
            bounds = np.min(offset[:, None] + values, axis=0)
            bounds = np.minimum(bounds, node.bound)
            for index in np.argsort(bounds, kind="stable"):  # best child ends on top
                if bounds[index] > floor:
                    child = make_child(int(index))
                    child.bound = float(bounds[index])
                    stack.append(child)
        return True, floor


def _completion_at(
    tables: PartTables, group: int, best: np.ndarray, served: np.ndarray
) -> np.ndarray:
    """Best completion below a segment per candidate level: `best` and `served` are both
    already restricted to the candidates (prices, subsets, candidates)."""
    unserved = np.matmul(tables.unserved[group][None], served)
    result: np.ndarray = np.max(best + unserved, axis=1)
    return result
