"""Flexible requests for Amazon Beauty: everyday words, needs, price wordings, brand spellings, typos and
combinations, each with the set of every item that satisfies it (issue #22, step 1).

    python bench/flex_requests.py                       # writes bench/data/flex_requests.jsonl
    python bench/flex_requests.py --seed 1 --out /tmp/r.jsonl --per-family 50

The hand-written lexicons below map shoppers' words to Beauty's real category nodes (``Hair Dryers``,
``Fragrance > Men's``), needs to constraints, ingredients and qualities to required title words;
:func:`semid.llm.requests.make_requests` draws the requests (seeded), keeps those with at least one relevant
item, and splits them into dev and test by family. The script checks that every lexicon node exists in the
catalogue, and that no request text is a training or held-out query of ``prepare_dataset`` with the
configuration of ``bench/beauty_llm.py`` (``n_per_item=4``, ``seed=0``), then prints one table: family,
requests in dev and test, mean and median relevant items, and a few examples.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, print_table  # noqa: E402
from semid.llm.requests import Constraint as C  # noqa: E402
from semid.llm.requests import RequestLexicon  # noqa: E402

# Everyday words -> Beauty category nodes (any of). None of the words is a category name of the data.
CATEGORIES: dict[str, tuple[str, ...]] = {
    # fragrance
    "cologne": ("Cologne", "Fragrance > Men's"),
    "perfume": ("Fragrance",),
    "body mist": ("Body Sprays",),
    # hair tools and styling
    "blow dryers": ("Hair Dryers",),
    "hair straighteners": ("Flattening Irons",),
    "curling wands": ("Curling Irons",),
    "hot brushes": ("Hot-Air Brushes",),
    "hairbrushes": ("Styling Tools > Brushes",),
    "hair shears": ("Scissors", "Hair Cutting Kits"),
    "hot rollers": ("Hair Rollers",),
    "bobby pins": ("Hair Pins",),
    "hair ties": ("Ponytail Holders",),
    "hair slides": ("Barrettes", "Clips", "Claws"),
    "hairbands": ("Headbands",),
    "hair lacquer": ("Hair Sprays",),
    "styling gel": ("Styling Products > Creams, Gels & Lotions",),
    "hair putty": ("Pomades & Waxes",),
    "styling foam": ("Mousses & Foams",),
    "curl cream": ("Curl Enhancers",),
    "shine serum": ("Hair Styling Serums",),
    "hair masks": ("Hair & Scalp Treatments",),
    "hair colour": ("Hair Color",),
    "clip-in hair": ("Hair Extensions", "Hairpieces"),
    # makeup
    "lip stuff": ("Makeup > Lips",),
    "lippy": ("Lipstick",),
    "kohl": ("Eyeliner",),
    "falsies": ("Fake Eyelashes & Adhesives",),
    "brow makeup": ("Eyebrow Color",),
    "rouge": ("Blush",),
    "cover-up": ("Concealers & Neutralizers",),
    "pressed powder": ("Makeup > Face > Powder",),
    "glow powder": ("Bronzers & Highlighters",),
    "tinted moisturiser": ("Tinted Moisturizers",),
    "make-up brushes": ("Brushes & Applicators",),
    "makeup sponges": ("Puffs, Sponges & Wedges",),
    "makeup wipes": ("Makeup Remover", "Cloths & Towelettes"),
    "make-up pouches": ("Cosmetic Bags", "Toiletry Bags"),
    "vanity mirrors": ("Makeup Mirrors",),
    "q-tips": ("Cotton Swabs",),
    # nails
    "nail varnish": ("Nail Polish",),
    "acetone": ("Nail Polish Remover",),
    "clear coat for nails": ("Top & Base Coats",),
    "nail stickers": ("Nail Art",),
    "press-on nails": ("False Nails",),
    "emery boards": ("Nail Files & Buffers",),
    "toenail cutters": ("Clippers & Trimmers",),
    "nail lamps": ("Nail Dryers",),
    "cuticle softener": ("Cuticle Care",),
    # skin, bath and body
    "face wash": ("Skin Care > Face > Cleansers",),
    "moisturiser": ("Moisturizers", "Creams & Moisturizers"),
    "face serums": ("Oils & Serums",),
    "sheet masks": ("Treatments & Masks > Masks",),
    "skin tonic": ("Toners & Astringents",),
    "chemical peels": ("Acids & Peels",),
    "under-eye cream": ("Skin Care > Eyes",),
    "sunblock": ("Skin Protection", "Sunscreens"),
    "fake tan": ("Self-Tanners & Bronzers", "Self Tanners"),
    "hand moisturiser": ("Hand Creams & Lotions",),
    "shower gel": ("Body Washes",),
    "bar soap": ("Soaps", "Cleansers > Bars"),
    "body oil": ("Moisturizers > Oils",),
    "body polish": ("Body Scrubs",),
    "bath salts": ("Minerals & Salts",),
    "bath foam": ("Bubble Bath",),
    "shower puffs": ("Loofahs, Sponges & Poufs",),
    "foot files": ("Foot Rasps",),
}

SKIN, HAIR = ("Skin Care",), ("Hair Care",)
# What the shopper wants to do or fix -> constraint.
NEEDS: dict[str, C] = {
    "for dry skin": C(SKIN, title_words=("dry",)),
    "for oily skin": C(SKIN, title_words=("oily",)),
    "for sensitive skin": C(SKIN, title_words=("sensitive",)),
    "to clear up breakouts": C(SKIN, title_words=("acne",)),
    "to fight wrinkles": C(SKIN, title_words=("wrinkle*",)),
    "to shrink my pores": C(SKIN, title_words=("pore*",)),
    "to brighten dull skin": C(SKIN, title_words=("bright*",)),
    "for stretch marks": C(title_words=("stretch mark*",)),
    "for dark circles under my eyes": C(("Dark Circle Treatments",)),
    "for puffy eyes": C(("Puffiness Treatments",)),
    "to protect my skin at the beach": C(("Skin Protection", "Sunscreens")),
    "to soothe a sunburn": C(("After Sun",)),
    "to get a tan without the sun": C(("Self-Tanners & Bronzers", "Self Tanners")),
    "to straighten my hair": C(("Flattening Irons", "Hair Relaxers")),
    "to curl my hair": C(("Curling Irons", "Hair Rollers", "Curl Enhancers")),
    "to dry my hair quickly": C(("Hair Dryers",)),
    "for frizzy hair": C(HAIR, title_words=("frizz*",)),
    "for curly hair": C(HAIR, title_words=("curl*",)),
    "for dandruff": C(HAIR, title_words=("dandruff",)),
    "for thinning hair": C(("Hair Loss Products",)),
    "to cover my grey hair": C(("Hair Color",)),
    "to add volume to flat hair": C(HAIR, title_words=("volum*",)),
    "for colour-treated hair": C(HAIR, title_words=("color treated",)),
    "for damaged hair": C(HAIR, title_words=("damage*",)),
    "to keep my hairstyle in place all day": C(("Hair Sprays", "Pomades & Waxes")),
    "to tame flyaways": C(("Hair Styling Serums", "Pomades & Waxes")),
    "for chapped lips": C(title_words=("lip balm",)),
    "to make my lashes look longer": C(("Mascara", "Fake Eyelashes & Adhesives")),
    "to fill in sparse brows": C(("Eyebrow Color",)),
    "to hide blemishes": C(("Concealers & Neutralizers",)),
    "to take off waterproof mascara": C(("Makeup Remover > Eyes",)),
    "to remove my nail polish": C(("Nail Polish Remover",)),
    "for weak, splitting nails": C(("Nail Strengthening", "Growth Formula", "Nail Repair")),
    "to do nail art at home": C(("Nail Art", "Nail Art Equipment")),
    "to dry my nails faster": C(("Nail Dryers",)),
    "for rough feet": C(title_words=("foot",)),
    "for soft hands": C(("Hand Creams & Lotions", "Moisturizing Gloves", "Paraffin Baths")),
    "to relax in the bath": C(("Bubble Bath", "Bath Bombs", "Minerals & Salts", "Bath > Oils")),
    "to exfoliate my face": C(("Skin Care > Face > Exfoliators & Scrubs",)),
    "to exfoliate my body": C(("Body Scrubs",)),
    "to smell good all day": C(("Fragrance",)),
    "after shaving": C(title_words=("shav*",)),
    "to keep my makeup from melting": C(("Foundation Primers", "Makeup > Face > Powder")),
    "to contour my face": C(("Makeup > Face",), title_words=("contour*",)),
    "for a smoky eye": C(("Eye Shadow", "Eyeliner", "Liner & Shadow Combinations")),
}

# Ingredients (nouns: "shampoo with argan oil") and qualities (adjectives: "waterproof kohl") -> title words.
INGREDIENTS: dict[str, tuple[str, ...]] = {
    "argan oil": ("argan",), "tea tree": ("tea tree",), "coconut": ("coconut",), "shea butter": ("shea",),
    "vitamin c": ("vitamin c",), "vitamin e": ("vitamin e",), "aloe vera": ("aloe",), "lavender": ("lavender",),
    "vanilla": ("vanilla",), "charcoal": ("charcoal",), "collagen": ("collagen",),
    "hyaluronic acid": ("hyaluronic",), "retinol": ("retinol",), "honey": ("honey",), "almond oil": ("almond",),
    "keratin": ("keratin",), "biotin": ("biotin",), "jojoba": ("jojoba",), "green tea": ("green tea",),
    "cocoa butter": ("cocoa",), "mint": ("mint",), "lemon": ("lemon",), "cucumber": ("cucumber",),
    "oatmeal": ("oat*",),
}  # fmt: skip
QUALITIES: dict[str, tuple[str, ...]] = {
    "waterproof": ("waterproof",), "matte": ("matte",), "organic": ("organic",),
    "fragrance-free": ("fragrance free",), "paraben-free": ("paraben free",), "sulfate-free": ("sulfate free",),
    "unscented": ("unscented",), "vegan": ("vegan",), "travel-size": ("travel",), "mineral": ("mineral",),
    "long-lasting": ("long lasting",), "glittery": ("glitter*",),
}  # fmt: skip

# Hand-written requests for whom the item is (verbatim).
AUDIENCE: dict[str, C] = {
    "a fragrance for my dad": C(("Fragrance > Men's",)),
    "something my boyfriend can wear to smell nice": C(("Fragrance > Men's",)),
    "perfume for my wife": C(("Fragrance > Women's",)),
    "a scent my mum would like": C(("Fragrance > Women's",)),
    "a perfume for a little girl": C(("Fragrance > Children's",)),
    "gentle skin stuff for a baby": C(SKIN, title_words=("baby",)),
    "hair products for my kids": C(HAIR, title_words=("kids",)),
    "grooming stuff for my husband's beard": C(title_words=("beard",)),
    "skin care for a man": C(SKIN, title_words=("men",)),
    "face products for a teenager with spots": C(SKIN, title_words=("acne",)),
    "something for a mum-to-be": C(("Maternity",)),
    "a makeup kit for a beginner": C(("Makeup Sets", "Makeup Palettes")),
    "a present for someone into nail art": C(("Nail Art Equipment",)),
}

LEXICON = RequestLexicon(
    categories=CATEGORIES,
    needs=NEEDS,
    ingredients=INGREDIENTS,
    qualities=QUALITIES,
    extra={"audience": AUDIENCE},
)


def check_lexicon(fields) -> None:
    """Every category node or sub-path of the lexicons must match some item (a misspelt node fails here)."""
    from semid.errors import SemidError

    nodes = {n for v in CATEGORIES.values() for n in v}
    nodes |= {n for c in [*NEEDS.values(), *AUDIENCE.values()] for n in c.categories}
    missing = sorted(n for n in nodes if not C((n,)).mask(fields).any())
    if missing:
        raise SemidError(f"lexicon category nodes not in the catalogue: {', '.join(missing)}")


def training_queries(catalogue) -> tuple[set[str], set[str]]:
    """Normalised user turns of prepare_dataset's training and held-out examples (beauty_llm's config)."""
    from semid.llm.examples import ExampleConfig, build_examples
    from semid.llm.requests import normalize_text

    n = len(catalogue)
    codes = np.stack([np.arange(n) // 256, np.arange(n) % 256], axis=1)  # any unique IDs: text only
    ex = build_examples(
        catalogue, catalogue.item_ids, codes, ExampleConfig(n_per_item=4, n_valid_items=300, seed=0)
    )
    return tuple(
        {normalize_text(e["messages"][1]["content"]) for e in part if e["task"] == "predict_semantic_id"}
        for part in (ex.train, ex.valid)
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-family", type=int, default=36, help="requests per family, at most")
    p.add_argument("--dev-fraction", type=float, default=0.5)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "data" / "flex_requests.jsonl"
    )
    p.add_argument("--examples", type=int, default=2, help="example requests printed per family")
    args = p.parse_args()

    from semid.data import load_dataset
    from semid.llm.requests import (
        catalogue_fields,
        load_requests,
        make_requests,
        normalize_text,
        request_summary,
        save_requests,
    )

    catalogue = load_dataset([BEAUTY / "recbole_item"]).catalogue
    fields = catalogue_fields(catalogue)
    check_lexicon(fields)
    requests = make_requests(
        catalogue, args.seed, lexicon=LEXICON, per_family=args.per_family, dev_fraction=args.dev_fraction
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_requests(args.out, requests)
    assert load_requests(args.out) == requests  # the file is the set

    train_q, valid_q = training_queries(catalogue)
    texts = [normalize_text(r.text) for r in requests]
    in_train = sum(t in train_q for t in texts)
    in_valid = sum(t in valid_q for t in texts)

    rows = request_summary(requests)
    print(
        f"{len(requests)} requests in {len(rows) - 1} families over {len(catalogue):,} Beauty items -> {args.out.name}"
    )
    print_table(
        rows,
        ["family", "dev", "test", "mean_relevant", "median_relevant", "constraints"],
        "Flexible requests (relevant = every item satisfying the request's constraint)",
    )
    print(f"\nrequest texts among prepare_dataset's training queries (n_per_item=4, seed=0): {in_train}")
    print(f"request texts among its held-out queries (300 items): {in_valid}")
    print("\nexamples (split, relevant items, text -> constraint):")
    for fam in dict.fromkeys(r.family for r in requests):
        for r in [r for r in requests if r.family == fam][: args.examples]:
            parts = {k: v for k, v in r.constraint.to_dict().items() if v not in (None, [])}
            print(f"  {fam:15s} {r.split:4s} {r.n_relevant:5d}  {r.text!r} -> {parts}")


if __name__ == "__main__":
    main()
