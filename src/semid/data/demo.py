"""A synthetic beauty shop: a catalogue with readable titles and user sequences that carry signal.

:func:`make_demo_dataset` builds, from one seed and without any data file:

- a category taxonomy ``Beauty > top > sub > leaf`` (5 top categories, 43 leaves such as
  ``Beauty > Makeup > Lips > Lipstick``);
- 40 brands, each tied to one or two top categories, with a price tier and its own product lines;
- items with a colour / scent / skin-type variant, a finish, a size and a price, and titles such as
  ``"Velvet Matte Lipstick - Ruby Red, 3.5 g by Lumière"``;
- users whose sequences (5-30 items, mean about 10) follow latent category preferences, move between
  related leaves (lipstick -> lip liner), stay loyal to a favourite brand some of the time and lean a little
  towards popular items, so a sequence model has something to learn and a content model finds clusters.

The same seed gives byte-identical output (one ``numpy.random.Generator`` drawn in a fixed order).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from semid._utils import check_random_state
from semid.data.model import Catalogue, Dataset, Interactions, ParseReport
from semid.errors import SemidError

# Variant pools: what distinguishes two items of the same product (a colour, a scent, a skin type ...).
_VARIANTS: dict[str, tuple[str, ...]] = {
    "lip": ("Ruby Red", "Nude Rose", "Berry Crush", "Coral Kiss", "Mauve Dream", "Plum Noir", "Cherry Pop",
            "Pink Petal", "Brick Spice", "Toffee"),
    "eye": ("Jet Black", "Espresso Brown", "Midnight Blue", "Bronze Glow", "Forest Green", "Smoky Grey",
            "Golden Sand", "Violet Haze"),
    "shade": ("Porcelain", "Ivory", "Light Beige", "Natural Sand", "Warm Honey", "Golden Tan", "Caramel",
              "Chestnut", "Espresso", "Deep Cocoa"),
    "cheek": ("Peach Blush", "Rose Gold", "Sunlit Bronze", "Champagne", "Soft Pink", "Terracotta"),
    "nail": ("Ballet Pink", "Scarlet", "Navy Night", "Lilac", "Mint Frost", "Champagne", "Crimson", "Coral Reef",
             "Onyx"),
    "skin": ("Dry Skin", "Oily Skin", "Combination Skin", "Sensitive Skin", "All Skin Types", "Mature Skin"),
    "hair": ("Dry Hair", "Curly Hair", "Fine Hair", "Colour-Treated Hair", "Damaged Hair", "All Hair Types"),
    "scent": ("Vanilla Orchid", "Citrus Bloom", "Oud Wood", "Rose Petal", "Fresh Linen", "Sea Salt", "Amber Musk",
              "Jasmine", "Coconut", "Lavender"),
    "tool": ("1 inch", "1.25 inch", "1.5 inch", "Travel Size", "1875 W", "Ceramic Plates"),
}  # fmt: skip
# Variants that are colours go in the `colour` field; the others only in the title.
_COLOUR_KINDS = {"lip", "eye", "shade", "cheek", "nail"}
_FINISHES: dict[str, tuple[str, ...]] = {
    "lip": ("Matte", "Velvet Matte", "Satin", "Glossy", "Sheer", "Metallic", "Cream"),
    "eye": ("Waterproof", "Volumizing", "Lengthening", "Long-Wear", "Smudge-Proof", "Shimmer"),
    "shade": ("Matte", "Dewy", "Radiant", "Natural", "Full-Coverage", "Luminous"),
    "cheek": ("Matte", "Shimmer", "Satin", "Baked", "Cream"),
    "nail": ("Gel-Effect", "Glossy", "Matte", "Glitter", "Quick-Dry", "Chrome"),
    "skin": ("Hydrating", "Brightening", "Soothing", "Firming", "Purifying", "Anti-Aging", "Oil-Free"),
    "hair": ("Volumizing", "Smoothing", "Repairing", "Moisturizing", "Strengthening", "Curl-Defining"),
    "scent": ("Intense", "Fresh", "Classic", "Noir", "Sport"),
    "tool": ("Professional", "Compact", "Salon", "Cordless", "Ionic"),
}
# top -> sub -> [(leaf, variant kind, sizes, base price in dollars)]
_TAXONOMY: dict[str, dict[str, list[tuple[str, str, tuple[str, ...], float]]]] = {
    "Makeup": {
        "Lips": [("Lipstick", "lip", ("3.5 g", "4 g", "2.8 g"), 14), ("Lip Gloss", "lip", ("6 ml", "8 ml"), 11),
                 ("Lip Liner", "lip", ("1.2 g", "0.8 g"), 9), ("Lip Balm", "lip", ("4.5 g", "10 ml"), 6)],
        "Eyes": [("Mascara", "eye", ("10 ml", "8 ml"), 13), ("Eyeliner", "eye", ("1.2 g", "3 ml"), 10),
                 ("Eyeshadow Palette", "eye", ("12 x 1 g", "9 x 1.5 g"), 32), ("Brow Pencil", "eye", ("0.1 g",), 12)],
        "Face": [("Foundation", "shade", ("30 ml", "50 ml"), 28), ("Concealer", "shade", ("6 ml", "4 g"), 16),
                 ("Blush", "cheek", ("5 g", "9 g"), 15), ("Bronzer", "cheek", ("8 g", "10 g"), 18),
                 ("Setting Powder", "shade", ("10 g", "20 g"), 20), ("Highlighter", "cheek", ("7 g",), 19)],
    },
    "Skin Care": {
        "Face": [("Cleanser", "skin", ("150 ml", "250 ml"), 14), ("Moisturizer", "skin", ("50 ml", "75 ml"), 24),
                 ("Serum", "skin", ("30 ml", "15 ml"), 34), ("Toner", "skin", ("200 ml",), 15),
                 ("Face Mask", "skin", ("75 ml", "5 sheets"), 17), ("Eye Cream", "skin", ("15 ml",), 29)],
        "Body": [("Body Lotion", "scent", ("250 ml", "400 ml"), 12), ("Body Wash", "scent", ("500 ml", "250 ml"), 9),
                 ("Body Scrub", "scent", ("200 g", "300 g"), 15)],
        "Sun": [("Sunscreen SPF 50", "skin", ("50 ml", "100 ml"), 19), ("After-Sun Gel", "scent", ("200 ml",), 11)],
    },
    "Hair Care": {
        "Shampoo & Conditioner": [("Shampoo", "hair", ("250 ml", "500 ml"), 12),
                                  ("Conditioner", "hair", ("250 ml", "500 ml"), 12),
                                  ("Dry Shampoo", "hair", ("200 ml",), 10)],
        "Styling": [("Hair Spray", "hair", ("300 ml",), 11), ("Styling Gel", "hair", ("150 ml",), 9),
                    ("Hair Oil", "hair", ("50 ml", "100 ml"), 22)],
        "Tools": [("Hair Dryer", "tool", ("",), 59), ("Flat Iron", "tool", ("",), 49),
                  ("Curling Wand", "tool", ("",), 45)],
    },
    "Fragrance": {
        "Women's": [("Eau de Parfum", "scent", ("30 ml", "50 ml", "100 ml"), 58),
                    ("Eau de Toilette", "scent", ("50 ml", "100 ml"), 42), ("Body Mist", "scent", ("236 ml",), 16)],
        "Men's": [("Cologne", "scent", ("50 ml", "100 ml"), 48), ("Aftershave Balm", "scent", ("100 ml",), 24)],
    },
    "Nails": {
        "Nail Polish": [("Nail Polish", "nail", ("15 ml", "8 ml"), 9), ("Top Coat", "nail", ("15 ml",), 10)],
        "Nail Care": [("Cuticle Oil", "scent", ("15 ml",), 8), ("Nail Strengthener", "nail", ("13 ml",), 12)],
    },
}  # fmt: skip
# (brand, top categories, price tier: 0 budget, 1 mid, 2 luxury)
_BRANDS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("Lumière", ("Makeup",), 2), ("Velvetine", ("Makeup",), 1), ("Maison Rouge", ("Makeup",), 2),
    ("Glow Theory", ("Makeup", "Skin Care"), 1), ("Kiss & Tell", ("Makeup",), 0), ("Nocturne", ("Makeup",), 1),
    ("Petal Lab", ("Makeup", "Skin Care"), 0), ("Cosmique", ("Makeup", "Nails"), 1), ("Prismatic", ("Makeup",), 0),
    ("Aurora Botanics", ("Skin Care",), 1), ("DermaPure", ("Skin Care",), 1), ("Hydra Lab", ("Skin Care",), 0),
    ("Verdant Skin", ("Skin Care",), 2), ("Clarity", ("Skin Care",), 0), ("Seabloom", ("Skin Care", "Hair Care"), 1),
    ("Nordic Derm", ("Skin Care",), 2), ("Purely", ("Skin Care",), 0), ("Solstice", ("Skin Care", "Fragrance"), 1),
    ("Silk & Strand", ("Hair Care",), 1), ("Maneology", ("Hair Care",), 0), ("Crown Co.", ("Hair Care",), 1),
    ("Tressé", ("Hair Care",), 2), ("Volume Theory", ("Hair Care",), 0), ("Ionix Pro", ("Hair Care",), 1),
    ("Luxe Locks", ("Hair Care",), 2), ("Maison Ambre", ("Fragrance",), 2), ("Eau Noire", ("Fragrance",), 2),
    ("Santal & Co.", ("Fragrance",), 1), ("Bloom Parfums", ("Fragrance", "Skin Care"), 1),
    ("Atelier Nuit", ("Fragrance",), 2), ("Citrus Republic", ("Fragrance",), 0), ("Lacquer Lane", ("Nails",), 1),
    ("Polish Pop", ("Nails",), 0), ("Nailed It", ("Nails",), 0), ("Gloss Society", ("Nails",), 1),
    ("Opaline", ("Nails", "Makeup"), 2), ("Everyday Basics", ("Skin Care", "Hair Care"), 0),
    ("Studio Nine", ("Makeup", "Nails"), 1), ("Verde Vita", ("Skin Care", "Hair Care"), 1),
    ("Rare Orchid", ("Fragrance", "Makeup"), 2),
)  # fmt: skip
_LINE_WORDS = (
    "Velvet", "Silk", "Pure", "Hydra Boost", "Ultra", "Pro", "Luxe", "Daily", "Glow", "Bare", "Bold", "Cloud",
    "Nectar", "Aqua", "Bloom", "Prime", "Infinite", "Radiance", "Essential", "Studio", "Flawless", "Soft Focus",
)  # fmt: skip
_TIER_PRICE = (0.6, 1.0, 1.9)
_EPOCH = 1_577_836_800  # 2020-01-01 UTC


def _leaves() -> list[tuple[str, str, str, str, tuple[str, ...], float]]:
    """(top, sub, leaf, variant kind, sizes, base price) for every leaf, in taxonomy order."""
    return [
        (top, sub, leaf, kind, sizes, price)
        for top, subs in _TAXONOMY.items()
        for sub, leaves in subs.items()
        for leaf, kind, sizes, price in leaves
    ]


def _pick(rng: np.random.Generator, n_options: np.ndarray | int, size: int) -> np.ndarray:
    """Uniform index in ``[0, n_options)`` per draw (vectorised over per-draw option counts)."""
    return np.minimum((rng.random(size) * n_options).astype(np.int64), np.asarray(n_options) - 1)


def _sample_in_groups(
    rng: np.random.Generator, cum: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """For each draw, a row in ``[start, end)`` with probability proportional to its weight.

    ``cum`` is the cumulative weight of rows sorted by group; groups are contiguous row ranges.
    """
    cum0 = np.concatenate([[0.0], cum])
    target = cum0[start] + rng.random(len(start)) * (cum0[end] - cum0[start])
    return np.clip(np.searchsorted(cum, target, side="right"), start, end - 1)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (n, k) matrix of (unnormalised) probabilities."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def make_demo_dataset(n_items: int = 3000, n_users: int = 2000, seed: int = 0) -> Dataset:
    """A deterministic synthetic beauty dataset: catalogue of ``n_items``, sequences of ``n_users`` users.

    Catalogue fields: ``title``, ``brand``, ``categories`` (``["Beauty", top, sub, leaf]``), ``colour``
    (null for items without one), ``finish``, ``size``, ``price``. Interactions carry unix timestamps and
    1-5 ratings; every user has 5-30 interactions.

    Example::

        >>> ds = make_demo_dataset(n_items=200, n_users=50, seed=1)
        >>> len(ds.catalogue), ds.interactions.n_users
        (200, 50)
    """
    for name, v in (("n_items", n_items), ("n_users", n_users)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise SemidError(f"{name}={v!r} should be an integer >= 1")
    rng = check_random_state(seed)
    leaves = _leaves()
    n_leaves = len(leaves)
    tops = list(_TAXONOMY)
    leaf_top = np.array([tops.index(t) for t, *_ in leaves])
    subs: dict[tuple[str, str], int] = {}
    leaf_sub = np.array([subs.setdefault((t, s), len(subs)) for t, s, *_ in leaves])

    # -- brands: which leaves they serve, price tier, product lines ----------------------------------------
    n_brands = len(_BRANDS)
    brand_tops = np.zeros((n_brands, len(tops)), dtype=bool)
    for b, (_, btops, _) in enumerate(_BRANDS):
        brand_tops[b, [tops.index(t) for t in btops]] = True
    brand_tier = np.array([tier for *_, tier in _BRANDS])
    brand_pop = rng.lognormal(0.0, 0.6, n_brands)
    brand_lines = np.stack([rng.choice(len(_LINE_WORDS), 3, replace=False) for _ in range(n_brands)])

    # -- items -----------------------------------------------------------------------------------------
    leaf_pop = rng.lognormal(0.0, 0.5, n_leaves)
    item_leaf = np.concatenate(
        [
            np.arange(min(n_items, n_leaves)),
            rng.choice(n_leaves, n_items - min(n_items, n_leaves), p=leaf_pop / leaf_pop.sum()),
        ]
    )
    # Brand: among the brands serving the leaf's top category, weighted by brand popularity.
    serve = brand_tops[:, leaf_top[item_leaf]].T * brand_pop  # (n_items, n_brands)
    item_brand = _categorical(rng, serve)
    kinds = [leaves[leaf][3] for leaf in item_leaf]
    n_var = np.array([len(_VARIANTS[k]) for k in kinds])
    n_fin = np.array([len(_FINISHES[k]) for k in kinds])
    n_size = np.array([len(leaves[leaf][4]) for leaf in item_leaf])
    variant = _pick(rng, n_var, n_items)
    finish = _pick(rng, n_fin, n_items)
    size = _pick(rng, n_size, n_items)
    line = brand_lines[item_brand, _pick(rng, 3, n_items)]
    base = np.array([leaves[leaf][5] for leaf in item_leaf])
    price = (
        np.round(base * np.array(_TIER_PRICE)[brand_tier[item_brand]] * rng.lognormal(0, 0.2, n_items), 0)
        - 0.01
    )
    price = np.maximum(price, 0.99)
    popularity = rng.lognormal(0.0, 1.0, n_items) * brand_pop[item_brand]

    titles, colours, finishes, sizes, cats = [], [], [], [], []
    for i in range(n_items):
        top, sub, leaf, kind, leaf_sizes, _ = leaves[item_leaf[i]]
        v, f, s = _VARIANTS[kind][variant[i]], _FINISHES[kind][finish[i]], leaf_sizes[size[i]]
        brand, ln = _BRANDS[item_brand[i]][0], _LINE_WORDS[line[i]]
        if kind in ("skin", "hair"):
            head = f"{ln} {f} {leaf} for {v}"
        elif kind == "scent" and top == "Fragrance":
            head = f"{ln} {leaf} {f} - {v}"
        else:
            head = f"{ln} {f} {leaf} - {v}"
        titles.append(f"{head}, {s} by {brand}" if s else f"{head} by {brand}")
        colours.append(v if kind in _COLOUR_KINDS else None)
        finishes.append(f)
        sizes.append(s or None)
        cats.append(["Beauty", top, sub, leaf])

    # Shuffle rows so that item ids say nothing about categories.
    perm = rng.permutation(n_items)
    width = max(5, len(str(n_items)))
    item_ids = [f"D{k:0{width}d}" for k in range(n_items)]
    table = pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "title": pa.array([titles[p] for p in perm], pa.string()),
            "brand": pa.array([_BRANDS[item_brand[p]][0] for p in perm], pa.string()),
            "categories": pa.array([cats[p] for p in perm], pa.list_(pa.string())),
            "colour": pa.array([colours[p] for p in perm], pa.string()),
            "finish": pa.array([finishes[p] for p in perm], pa.string()),
            "size": pa.array([sizes[p] for p in perm], pa.string()),
            "price": pa.array(price[perm], pa.float64()),
        }
    )
    catalogue = Catalogue(table)
    item_leaf, item_brand, popularity = item_leaf[perm], item_brand[perm], popularity[perm]

    # -- grouping items for sampling: by leaf, and by (leaf, brand) ---------------------------------------
    by_leaf = np.argsort(item_leaf, kind="stable")
    leaf_sorted = item_leaf[by_leaf]
    leaf_cum = np.cumsum(popularity[by_leaf])
    leaf_start = np.searchsorted(leaf_sorted, np.arange(n_leaves), "left")
    leaf_end = np.searchsorted(leaf_sorted, np.arange(n_leaves), "right")
    has_items = leaf_end > leaf_start
    lb_key = item_leaf * n_brands + item_brand
    by_lb = np.argsort(lb_key, kind="stable")
    lb_sorted = lb_key[by_lb]
    lb_cum = np.cumsum(popularity[by_lb])

    # -- users: latent preferences ---------------------------------------------------------------------
    top_pop = np.bincount(leaf_top, weights=leaf_pop, minlength=len(tops))
    fav_top = rng.choice(len(tops), n_users, p=top_pop / top_pop.sum())
    second = rng.choice(len(tops), n_users, p=top_pop / top_pop.sum())
    two = rng.random(n_users) < 0.4
    in_fav = (leaf_top[None, :] == fav_top[:, None]) | (two[:, None] & (leaf_top[None, :] == second[:, None]))
    pref = rng.gamma(0.4, 1.0, (n_users, n_leaves)) * in_fav + 0.01  # a little mass on every leaf
    pref *= has_items
    fav_brand = _categorical(rng, brand_tops[:, fav_top].T * brand_pop)
    loyalty = rng.beta(2.0, 3.0, n_users)
    lengths = np.minimum(5 + rng.negative_binomial(2, 2 / 7, n_users), 30)  # mean about 10

    # Related leaves: siblings (same sub-category) strongly, same top category weakly.
    same_sub = leaf_sub[:, None] == leaf_sub[None, :]
    same_top = leaf_top[:, None] == leaf_top[None, :]
    related = (1.0 * same_sub + 0.2 * same_top) * (1 - 0.8 * np.eye(n_leaves)) * has_items

    # -- sequences, one step for all users at a time -----------------------------------------------------
    max_len = int(lengths.max())
    seq = np.zeros((n_users, max_len), dtype=np.int64)
    cur_leaf = _categorical(rng, pref)
    for t in range(max_len):
        if t > 0:
            follow = rng.random(n_users) < 0.5
            nxt = _categorical(rng, related[cur_leaf] * pref + 1e-12 * has_items)
            fresh = _categorical(rng, pref)
            cur_leaf = np.where(follow, nxt, fresh)
        # Favourite brand when loyal and the brand has items in this leaf, else any item of the leaf.
        key = cur_leaf * n_brands + fav_brand
        s, e = np.searchsorted(lb_sorted, key, "left"), np.searchsorted(lb_sorted, key, "right")
        loyal = (rng.random(n_users) < loyalty) & (e > s)
        from_leaf = by_leaf[_sample_in_groups(rng, leaf_cum, leaf_start[cur_leaf], leaf_end[cur_leaf])]
        from_brand = by_lb[_sample_in_groups(rng, lb_cum, np.where(loyal, s, 0), np.where(loyal, e, 1))]
        seq[:, t] = np.where(loyal, from_brand, from_leaf)

    mask = np.arange(max_len)[None, :] < lengths[:, None]
    user_codes = np.repeat(np.arange(n_users), lengths)
    item_codes = seq[mask]  # row-major: each user's items in order
    gaps = rng.exponential(6 * 86400, len(item_codes)).astype(np.int64) + 60
    start = _EPOCH + rng.integers(0, 3 * 365 * 86400, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    cum_gaps = np.cumsum(gaps)
    stamps = start[user_codes] + cum_gaps - np.repeat(cum_gaps[offsets[:-1]], lengths)
    ratings = rng.choice(np.arange(1, 6), len(item_codes), p=[0.04, 0.06, 0.12, 0.28, 0.5]).astype(np.float64)
    uwidth = max(5, len(str(n_users)))
    interactions = Interactions.from_codes(
        pa.array([f"U{u:0{uwidth}d}" for u in range(n_users)], pa.string()),
        user_codes,
        catalogue.table.column("item_id").combine_chunks(),
        item_codes,
        stamps.astype(np.int64),
        ratings,
    )
    return Dataset(
        catalogue,
        interactions,
        ParseReport(),
        name=f"demo(n_items={n_items}, n_users={n_users}, seed={seed})",
    )
