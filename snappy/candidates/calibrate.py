"""Self-calibration of the candidate stage: the budgets that reach a target recall on the index's own data.

The budgets of the candidate stage (how deep the probe goes, how many pages it keeps for the pooled
rescoring, how many are reranked exactly) decide its recall, and the recall they give depends on the
corpus: budgets tuned on one corpus lose a third of the exact top-10 on another (issue 15). So the
nightly run measures it on the index itself (:func:`calibrate`):

1. **queries** — real logged queries where the service has them (``logged``), else **pseudo-queries**
   drawn from stored pages the way real queries look (:func:`pseudo_queries`): a few of a page's
   distinctive tokens (those whose centroid holds few pages), each the mean of the page's tokens on that
   centroid plus noise (a query paraphrases), after the encoder's prefix tokens when it has them;
2. **truth** — their exact MaxSim over every live page (the nightly run computes it in the pass that
   reads the pages anyway);
3. **curve** — for a grid of budgets, the share of the exact top-10 each stage keeps and the final
   recall@10 (:func:`stage_recall`), with a modelled cost per query (:func:`Budgets.cost_ms`);
4. **choice** — the cheapest budgets whose recall reaches the target (default 0.95; :func:`choose`),
   stored with the codebook as :class:`Calibration` (JSON in the codebook table's ``calibration``
   column); a query may ask for another target (``CandidateOptions.target_recall``), answered from the
   same curve. It is measured again when the index drifts (:func:`plan_calibration`).

The exact rerank stops by a bound rather than at a fixed count (:func:`rerank_more`): after the first
``candidates`` pages, the pages whose pooled score plus the largest (exact - pooled) seen so far could
still reach the k-th exact score are reranked too, up to ``max_candidates``. Near-duplicate pages (one
template, many pages) have near-equal pooled scores, so a group larger than the rerank is read until its
members cannot enter the top-k any more, instead of being cut at an arbitrary member.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_TARGET = 0.95
DEFAULT_MARGIN_SE = 1.0  # see floor()

# modelled cost of one query (ms, one core; docs/search.md): a probed inverted-list entry, a page's
# pooled MaxSim (128 4-bit vectors), a page read from Lance and scored exactly
COST_ENTRY_MS = 2.5e-5
COST_POOLED_MS = 0.022
COST_EXACT_MS = 1.6


@dataclass(frozen=True)
class Budgets:
    """One operating point of the candidate stage."""

    probe_budget: int = 112  # centroids probed per query in all (at least nprobe = 8 per token)
    pool: int = 4096  # pages kept by the probe (at the calibrated index size; scaled by pool_share)
    candidates: int = 128  # pages reranked exactly, at least
    max_candidates: int = 128  # ... at most, when the bound says more pages could enter the top-k
    slack: float = 0.0  # added to the bound, as a share of the k-th exact score; 0: the largest (exact - pooled) seen
    pool_share: float | None = None  # pool / pages when calibrated: the pool follows the index's size

    def pool_for(self, n_pages: int) -> int:
        """The pool for an index (or shard) of ``n_pages``: ``pool_share`` of it when set, never fewer than
        the pages reranked."""
        pool = self.pool if self.pool_share is None else int(math.ceil(self.pool_share * n_pages))
        return max(pool, self.candidates)

    def cost_ms(self, entries: float, reranked: float) -> float:
        """Modelled ms per query for ``entries`` probed list entries and ``reranked`` exact pages."""
        return COST_ENTRY_MS * entries + COST_POOLED_MS * self.pool + COST_EXACT_MS * reranked


def rerank_more(pooled: np.ndarray, exact: np.ndarray, k: int, slack: float = 0.0) -> int:
    """How many more pages of a pool to rerank exactly (pure).

    ``pooled``: the pool's pooled scores in decreasing order; ``exact``: the exact scores of its first
    ``len(exact)`` pages. A page not yet reranked can still enter the top-``k`` when its pooled score plus
    the largest (exact - pooled) of the reranked pages plus ``slack`` x the k-th exact score reaches the
    k-th exact score; the pooled scores decrease, so those pages are the next ones in order. 0: the
    top-k is final (no remaining page can reach it under the bound).

    The bound is empirical: pooling can lose more of a page's score than it lost on the pages reranked
    so far, so ``slack`` is calibrated like the other budgets (a true bound from the pooled vectors'
    spherical caps was too loose to stop anything: 8:1 pools of noisy tokens span ~30 degrees)."""
    c = len(exact)
    if c >= len(pooled):
        return 0
    if c < k:
        return min(k, len(pooled)) - c
    kth = np.partition(exact, c - k)[c - k]
    lift = float(np.max(exact - pooled[:c])) + slack * abs(float(kth))
    return int(np.count_nonzero(pooled[c:] + lift >= kth))


def reranked_count(pooled: np.ndarray, exact: np.ndarray, k: int, b: Budgets, step: int = 32) -> int:
    """Pages the searcher reranks for one query under ``b`` (pure): ``candidates`` first, then
    ``step`` more at a time while :func:`rerank_more` asks for more, up to ``max_candidates``.
    ``exact``: the exact scores of the pool in pooled order (known in a simulation)."""
    n = min(len(pooled), b.candidates)
    while n < min(len(pooled), b.max_candidates):
        more = rerank_more(pooled, exact[:n], k, b.slack)
        if not more:
            break
        n = min(n + min(more, step), b.max_candidates, len(pooled))
    return n


@dataclass
class Calibration:
    """What the nightly run measured, stored with the codebook (``to_json``)."""

    codebook_id: int
    n_pages: int  # live pages when measured
    target: float
    queries: int  # pseudo-queries + logged queries measured
    logged: int  # of which real logged queries
    chosen: Budgets
    estimate: float  # recall@10 of the chosen budgets on the calibration queries (the lowest group's: row_estimate)
    curve: list[dict] = field(default_factory=list)  # every budget tried: budgets, recall per stage, cost
    measured_at: str = ""
    margin_se: float = 1.0  # standard errors a point's recall must clear the target by (choose)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> "Calibration | None":
        if not text:
            return None
        d = json.loads(text)
        d["chosen"] = Budgets(**d["chosen"])
        return cls(**d)

    def for_target(self, target: float | None) -> tuple[Budgets, float]:
        """(budgets, estimated recall@10) for ``target`` (None: the calibrated one), from the curve."""
        if target is None or target == self.target or not self.curve:
            return self.chosen, self.estimate
        row = choose(self.curve, target, self.margin_se)
        return Budgets(**row["budgets"]), row_estimate(row)

    def summary(self) -> dict:
        """What ``snappy inspect`` and ``GET /version`` show."""
        b = self.chosen
        return {"target_recall": self.target, "estimated_recall": round(self.estimate, 3), "queries": self.queries,
                "logged_queries": self.logged, "pages": self.n_pages, "measured_at": self.measured_at,
                "budgets": {"probe_budget": b.probe_budget, "pool": b.pool, "candidates": b.candidates,
                            "max_candidates": b.max_candidates}}


def choose(curve: list[dict], target: float, margin_se: float = 1.0) -> dict:
    """The cheapest row of ``curve`` whose recall reaches ``target`` (on all its queries less ``margin_se``
    standard errors, and on the hard ones: :func:`floor`); none does: the one of highest recall (the
    cheapest among those) (pure)."""
    if not curve:
        raise ValueError("an empty calibration curve")
    ok = [r for r in curve if floor(r, margin_se) >= target]
    if ok:
        return min(ok, key=lambda r: (r["cost_ms"], -floor(r, margin_se)))
    best = max(floor(r, margin_se) for r in curve)
    return min((r for r in curve if floor(r, margin_se) == best), key=lambda r: r["cost_ms"])


def plan_calibration(n_pages: int, codebook_id: int, calibration: Calibration | None, target: float,
                     growth: float = 1.5, logged: int = 0, newer: int = 0, wanted: int = 100,
                     age_days: float = 0.0, max_age_days: float = 7.0) -> str | None:
    """Why the budgets must be measured (again) now, or None (pure): none measured, a new codebook, another
    target, the index grew or shrank ``growth`` times since; or real queries can join the pseudo-queries:
    the query log holds ``logged`` queries, at least half of ``wanted`` more than the calibration used; or
    the calibration is ``max_age_days`` old and the log holds ``wanted`` queries ``newer`` than it."""
    if calibration is None:
        return "no calibration yet"
    if calibration.codebook_id != codebook_id:
        return "the codebook was retrained"
    if abs(calibration.target - target) > 1e-9:
        return f"the target recall changed ({calibration.target} -> {target})"
    ratio = n_pages / max(calibration.n_pages, 1)
    if ratio >= growth or ratio <= 1 / growth:
        return f"the index has {n_pages} pages, {calibration.n_pages} when calibrated"
    usable = min(logged, wanted)
    if usable > calibration.logged and usable >= calibration.logged + max(wanted // 2, 1):
        return f"the query log holds {logged} queries, the calibration used {calibration.logged}"
    if age_days >= max_age_days and newer >= wanted:
        return f"the calibration is {age_days:.0f} days old and the query log holds {newer} newer queries"
    return None


def default_grid(n_pages: int) -> list[Budgets]:
    """The budgets tried: probe depth x pool (up to every page: on a corpus whose pooled vectors separate
    pages poorly only a full pooled pass reaches the target) x rerank (fixed; bound-stopped up to 4x or
    16x, at most 2,048 pages, with three slacks) (pure)."""
    pools = sorted({min(n_pages, p) for p in (1024, 2048, 4096, 8192, 16384, 32768, 65536, n_pages)})
    out = []
    for probe in (112, 224, 448):
        for pool in pools:
            for cand in (64, 96, 128, 192, 256, 384, 512):
                if cand > pool:
                    continue
                out.append(Budgets(probe, pool, cand, cand))
                for cap in (4 * cand, 16 * cand):  # bound-stopped reranks
                    for slack in (0.0, 0.05, 0.1):
                        if cap <= 2048 and cand < pool:
                            out.append(Budgets(probe, pool, cand, min(cap, pool), slack))
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------- measuring
def exact_maxsim(queries: list[np.ndarray], pages: list[np.ndarray]) -> np.ndarray:
    """``[len(queries), len(pages)]`` exact MaxSim (float32) of some pages (one batch of a pass)."""
    if not pages:
        return np.zeros((len(queries), 0), np.float32)
    lengths = np.array([len(p) for p in pages])
    flat = np.concatenate(pages).astype(np.float32)
    seg = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.zeros((len(queries), len(pages)), np.float32)
    nz = lengths > 0
    for i, q in enumerate(queries):
        sim = np.asarray(q, np.float32) @ flat.T  # [T, tokens]
        out[i, nz] = np.maximum.reduceat(sim, seg[nz], axis=1).sum(axis=0)
    return out


def stage_recall(index, queries: list[np.ndarray], exact: np.ndarray, grid: list[Budgets], k: int = 10,
                 n_pages: int | None = None, hard: np.ndarray | None = None,
                 groups: np.ndarray | None = None) -> list[dict]:
    """For each budget of ``grid``: the share of the exact top-``k`` the probe keeps (``probe``), the
    pooled rescoring hands to the rerank (``pooled``), the final top-``k`` holds (``recall``), with the
    mean pages reranked and the modelled cost. ``index``: a :class:`CentroidIndex`; ``exact``:
    ``[Q, index pages]`` exact MaxSim of ``queries``; ``n_pages``: pages the pool shares refer to;
    ``hard``: ``[Q]`` bool, the harder queries, whose recall is also given (``recall_hard``); ``groups``:
    ``[Q]`` labels (e.g. ``logged`` / ``pseudo``), each group's recall and standard error given too."""
    grid = list(dict.fromkeys(grid))  # a budget listed twice is measured once
    n = index.n_pages
    n_pages = n_pages or n
    truth = [set(np.argpartition(-e, k - 1)[:k].tolist()) if n > k else set(range(n)) for e in exact]
    acc = {b: {"probe": [], "pooled": [], "recall": [], "reranked": [], "entries": []} for b in grid}
    for qi, q in enumerate(queries):
        q = np.asarray(q, np.float32)
        for probe_budget in sorted({b.probe_budget for b in grid}):
            scores, entries = index.probe_scores(q, 8, probe_budget, count=True)
            hit = np.flatnonzero(scores != 0)
            order = hit[np.argsort(-scores[hit], kind="stable")]
            mine = [b for b in grid if b.probe_budget == probe_budget]
            biggest = order[:max(b.pool_for(n_pages) for b in mine)]
            ps_all = index.pooled_scores(q, biggest)  # the pools are prefixes of the probe's order
            for pool_size in sorted({b.pool_for(n_pages) for b in mine}):
                pool, ps = biggest[:pool_size], ps_all[:pool_size]
                by = np.argsort(-ps, kind="stable")
                ranked, ps, ex = pool[by], ps[by], exact[qi, pool[by]]
                probe_kept = len(truth[qi] & set(pool.tolist())) / k
                for b in (b for b in mine if b.pool_for(n_pages) == pool_size):
                    c = reranked_count(ps, ex, k, b)
                    final = ranked[:c][np.argsort(-ex[:c], kind="stable")[:k]]
                    a = acc[b]
                    a["probe"].append(probe_kept)
                    a["pooled"].append(len(truth[qi] & set(ranked[:b.candidates].tolist())) / k)
                    a["recall"].append(len(truth[qi] & set(final.tolist())) / k)
                    a["reranked"].append(c)
                    a["entries"].append(entries)
    rows = []
    for b, a in acc.items():
        reranked, entries = float(np.mean(a["reranked"])), float(np.mean(a["entries"]))
        rec = np.asarray(a["recall"])
        rows.append({"budgets": asdict(b), "probe": round(float(np.mean(a["probe"])), 4),
                     "pooled": round(float(np.mean(a["pooled"])), 4), "recall": round(float(np.mean(rec)), 4),
                     "se": round(float(np.std(rec) / math.sqrt(max(len(rec), 1))), 4),
                     "reranked": round(reranked, 1), "cost_ms": round(b.cost_ms(entries, reranked), 1)})
        if hard is not None and np.any(hard):
            rows[-1]["recall_hard"] = round(float(np.mean(rec[np.asarray(hard, bool)])), 4)
        if groups is not None and len(set(groups)) > 1:
            g = np.asarray(groups)
            rows[-1]["groups"] = {str(name): {"recall": round(float(np.mean(rec[g == name])), 4),
                                              "se": round(float(np.std(rec[g == name]) /
                                                                math.sqrt(int(np.sum(g == name)))), 4)}
                                  for name in sorted(set(g.tolist()))}
    return rows


def floor(row: dict, margin_se: float = 1.0) -> float:
    """The recall a row must reach the target with: its recall less ``margin_se`` standard errors of it,
    and that of its hard queries when measured. The margin answers the choice's own bias: the cheapest
    of hundreds of noisy points that pass is likely one measured high. With query ``groups`` (logged and
    pseudo-queries), each group must clear it too: pseudo-queries can be easier than real ones, and a
    sample of 100 logged queries can be (two such samples differed by 0.027)."""
    vals = [row["recall"] - margin_se * row.get("se", 0.0), row.get("recall_hard", row["recall"])]
    vals += [g["recall"] - margin_se * g["se"] for g in row.get("groups", {}).values()]
    return min(vals)


def row_estimate(row: dict) -> float:
    """The recall@10 a row is expected to give: its recall, or the lowest of its query groups' (pure)."""
    return min([row["recall"]] + [g["recall"] for g in row.get("groups", {}).values()])


def frontier(curve: list[dict], margin_se: float = 1.0) -> list[dict]:
    """The rows no other row beats in both cost and recall (what is worth storing) (pure)."""
    rows = sorted(curve, key=lambda r: (r["cost_ms"], -floor(r, margin_se)))
    out, best = [], -1.0
    for r in rows:
        if floor(r, margin_se) > best:
            out.append(r)
            best = floor(r, margin_se)
    return out


def pseudo_queries(pages: list[np.ndarray], codebook, list_sizes: np.ndarray, rng: np.random.Generator,
                   prefix: np.ndarray | None = None, tokens: tuple[int, int] = (3, 10),
                   noise: tuple[float, float] = (0.6, 1.0), rarity: float = 1.0, together: float = 0.5
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """One query per page of ``pages`` (``[n, dim]`` stored token vectors each), shaped as real queries:
    ``prefix`` (the encoder's instruction tokens, which every query carries), then ``tokens`` (uniform in
    the range) of the **concepts the page shows**, the rarer the likelier, each with Gaussian noise of
    relative norm ``noise`` (uniform in the range: a query paraphrases, more or less).

    A concept is recovered from the page itself: a seed token (drawn with probability inversely
    proportional to its centroid's list size, ``list_sizes``: pages per centroid, to the power
    ``rarity``), and every token of the page at cosine ``together`` or more from it (the patches of one
    word or figure); the query token is their unit mean, and they are not drawn again. Centroids the
    page's tokens share with nearly every page (margins, rules) are no concept. (Single centroids are not
    concepts: a page's noisy tokens fall into ~4x more centroids than it shows concepts, and queries made
    of those found the exact top-10 twice as easily as the corpus's own queries.)"""
    out, difficulty = [], []
    top = max(float(list_sizes.max()), 1.0) if len(list_sizes) else 1.0
    for v in pages:
        v = np.asarray(v, np.float32)
        v = v[(v != 0).any(axis=1)]
        if not len(v):
            continue
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        codes, _ = codebook.assign(v)
        df = list_sizes[codes].astype(np.float64)
        left = df < 0.9 * top
        if left.sum() < tokens[0]:
            left[:] = True
        m = int(rng.integers(tokens[0], tokens[1] + 1))
        q = []
        while len(q) < m and left.any():
            w = np.where(left, 1.0 / np.maximum(df, 1) ** rarity, 0.0)
            seed = int(rng.choice(len(v), p=w / w.sum()))
            members = left & (v @ v[seed] >= together)
            members[seed] = True
            if members.sum() >= min(2, int(left.sum())):  # a stray token is no concept
                q.append(v[members].mean(axis=0))
            left &= ~members
        q = np.stack(q)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        level = rng.uniform(*noise)
        q = q + rng.standard_normal(q.shape).astype(np.float32) * (level / math.sqrt(q.shape[1]))
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
        out.append(q if prefix is None or not len(prefix) else np.concatenate([np.asarray(prefix, np.float32), q]))
        difficulty.append((level - noise[0]) / max(noise[1] - noise[0], 1e-9) +
                          (tokens[1] - len(q)) / max(tokens[1] - tokens[0], 1))
    hard = np.asarray(difficulty) >= np.median(difficulty) if difficulty else np.zeros(0, bool)
    return out, hard


def calibrate(index, queries: list[np.ndarray], exact: np.ndarray, target: float = DEFAULT_TARGET,
              codebook_id: int = 0, n_pages: int | None = None, logged: int = 0, measured_at: str = "",
              grid: list[Budgets] | None = None, k: int = 10, hard: np.ndarray | None = None,
              margin_se: float | None = None, groups: np.ndarray | None = None) -> Calibration:
    """Measure ``grid`` (default :func:`default_grid`) on ``queries`` with their exact scores and choose
    the cheapest budgets that reach ``target``, on all queries and on the ``hard`` ones (see the module
    doc). The curve kept is its :func:`frontier`."""
    n_pages = n_pages or index.n_pages
    margin_se = DEFAULT_MARGIN_SE if margin_se is None else margin_se
    curve = stage_recall(index, queries, exact, grid or default_grid(index.n_pages), k, n_pages, hard, groups)
    for r in curve:  # the pool as a share of the index, so that it follows the index's size
        r["budgets"]["pool_share"] = r["budgets"]["pool"] / max(n_pages, 1)
    curve = frontier(curve, margin_se)
    row = choose(curve, target, margin_se)
    chosen, est = Budgets(**row["budgets"]), row_estimate(row)
    if est < target:
        log.warning("no budget tried reaches recall@%d %.2f (best %.3f): using the best", k, target, est)
    log.info("calibrated on %d queries: %s, estimated recall@%d %.3f", len(queries), chosen, k, est)
    return Calibration(int(codebook_id), int(n_pages), float(target), len(queries), int(logged), chosen,
                       float(est), curve, measured_at, float(margin_se))


def with_target(cal: Calibration, target: float) -> Calibration:
    """``cal`` re-chosen for another target from its stored curve (no measurement)."""
    b, est = cal.for_target(target)
    return replace(cal, target=target, chosen=b, estimate=est)
