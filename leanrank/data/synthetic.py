"""Seeded synthetic e-commerce data: a product catalog, graded search judgments, user sessions.

Built to exercise rankers without downloads: relevance comes from a hidden intent (category,
optional brand and attributes), while queries carry lexical noise (synonyms, unit variants,
typos, partial queries) and each query judges hard negatives that share its surface words
(``drill`` vs ``Drill Bit Set``), so token overlap is informative but clearly beatable.
Labels follow the Home Depot scale: the mean of three simulated raters on 1..3.

Judgments are complete where it matters: each query judges *every* catalog product of its top
relevance levels (all exact matches, and the one-attribute misses when they fit), at least
``min_relevant_per_query`` of them, so the unjudged BM25 candidates that the rerank protocol
mixes in (gain 0) are truly less relevant than any of its top ten. Intents are drawn specific
enough (brand and attributes) for that to stay small. ``SyntheticCatalog.oracle_score`` exposes
the hidden relevance: the ceiling a ranker that understands the queries can reach.

>>> cat = make_catalog(SyntheticConfig(n_products=200, n_queries=20, n_users=10))
>>> len(cat.products), len(cat.search.queries()), len(cat.sessions)
(200, 20, 10)
>>> cat.search.labels.relevant_min_label
2.33
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import cached_property

from leanrank.core.errors import LeanrankError
from leanrank.data.search import HOMEDEPOT_LABELS, Judgment, SearchDataset


@dataclass(frozen=True)
class _Category:
    dept: str
    weight: float
    brands: tuple[str, ...]
    nouns: tuple[str, ...]
    pre: dict  # attribute -> values, written before the noun in titles
    post: dict  # attribute -> values, written after a comma
    phrases: tuple[str, ...]  # how queries name it with words found in titles
    synonyms: tuple[str, ...]  # how queries name it with other words
    blurb: str


_C = _Category
_TOOLS = ("DeWalt", "Milwaukee", "Makita", "Ryobi", "Bosch", "Ridgid")
_FINISH = ("Chrome", "Brushed Nickel", "Matte Black", "Oil Rubbed Bronze")
_DECOR = ("Safavieh", "nuLOOM", "StyleWell", "Home Decorators Collection")
_COLORS = ("Gray", "Ivory", "Navy Blue", "Beige", "Charcoal", "Green")
CATEGORIES: dict[str, _Category] = {
    "drill": _C("tools", 1.2, _TOOLS, ("Cordless Drill/Driver Kit", "Brushless Cordless Drill",
                "Cordless Hammer Drill", "Compact Drill/Driver"), {"voltage": ("12V", "18V", "20V MAX")},
                {"kit": ("Tool Only", "1 Battery Kit", "2 Battery Kit")},
                ("cordless drill", "drill", "drill driver", "hammer drill"),
                ("power drill", "electric screwdriver", "drilling machine"),
                "Cordless drill for driving screws and boring holes in wood, metal and plastic."),
    "drill_bits": _C("tools", 0.8, ("DeWalt", "Milwaukee", "Bosch", "Makita", "Ryobi"),
                     ("Drill Bit Set", "Impact Drill Bit Set", "Drill and Drive Bit Set"),
                     {"pieces": ("7-Piece", "14-Piece", "21-Piece", "29-Piece")},
                     {"material": ("Titanium", "Cobalt", "Black Oxide")},
                     ("drill bits", "drill bit set"), ("bits for drill", "twist bits"),
                     "Assorted bits for drilling and driving, in a storage case."),
    "battery": _C("tools", 0.8, _TOOLS, ("Lithium-Ion Battery Pack", "Battery and Charger Starter Kit",
                  "Compact Lithium-Ion Battery"), {"voltage": ("12V", "18V", "20V MAX")},
                  {"capacity": ("2.0Ah", "4.0Ah", "5.0Ah"), "pack": ("1-Pack", "2-Pack")},
                  ("battery", "lithium ion battery", "battery pack", "drill battery"),
                  ("tool battery", "rechargeable cell"),
                  "Rechargeable battery that fits the brand's cordless tools."),
    "faucet": _C("plumbing", 1.2, ("Moen", "Delta", "Kohler", "Pfister", "Glacier Bay"),
                 ("Pull-Down Kitchen Faucet", "Bathroom Faucet", "Widespread Bathroom Faucet",
                  "Pull-Out Sprayer Kitchen Faucet"), {"handles": ("Single-Handle", "Two-Handle")},
                 {"finish": _FINISH + ("Spot Resist Stainless",)},
                 ("faucet", "kitchen faucet", "bathroom faucet"), ("kitchen tap", "sink tap", "mixer tap"),
                 "Faucet with ceramic disc valve and easy installation hardware."),
    "faucet_parts": _C("plumbing", 0.6, ("Moen", "Delta", "Glacier Bay", "Danco"),
                       ("Faucet Cartridge", "Replacement Faucet Handle", "Faucet Aerator",
                        "Faucet Supply Line"), {}, {"finish": _FINISH},
                       ("faucet cartridge", "faucet repair part"), ("tap washer", "valve insert"),
                       "Replacement part for repairing a leaking or worn faucet."),
    "paint": _C("paint", 1.2, ("Behr", "Glidden", "Valspar", "PPG"),
                ("Interior Paint and Primer", "Exterior Paint and Primer", "Interior Paint",
                 "Ceiling Paint"), {"size": ("1 Gal.", "5 Gal.", "1 Qt."),
                 "color": ("Ultra Pure White", "Swiss Coffee", "Agreeable Gray", "Navy Blue", "Sage Green"),
                 "sheen": ("Flat", "Eggshell", "Satin", "Semi-Gloss")}, {},
                ("paint", "interior paint", "paint and primer"), ("wall colour", "emulsion"),
                "Low-odor paint with one-coat hide and a washable finish."),
    "paint_tools": _C("paint", 0.7, ("Purdy", "Wooster", "Behr"),
                      ("Paint Brush", "Paint Roller Cover", "Paint Tray Kit", "Angled Sash Paint Brush"),
                      {"size": ("2 in.", "3 in.", "9 in.")}, {"pack": ("1-Pack", "3-Pack")},
                      ("paint brush", "paint roller"), ("brush for painting", "roller sleeve"),
                      "Applicator for a smooth, even coat of paint."),
    "light_bulb": _C("lighting", 1.2, ("Philips", "GE", "Feit Electric", "EcoSmart"),
                     ("LED Light Bulb", "Dimmable LED Light Bulb", "LED Flood Light Bulb"),
                     {"wattage": ("40W Equivalent", "60W Equivalent", "75W Equivalent", "100W Equivalent"),
                      "color_temp": ("Soft White", "Daylight", "Bright White"), "shape": ("A19", "BR30")},
                     {"pack": ("4-Pack", "8-Pack", "16-Pack")},
                     ("light bulb", "led bulb", "led light bulb"), ("led lamp", "globe", "lamp"),
                     "Energy-saving LED bulb rated for 15,000 hours."),
    "table_lamp": _C("lighting", 0.7, ("Hampton Bay", "Home Decorators Collection", "StyleWell",
                     "Globe Electric"), ("Table Lamp", "Desk Lamp", "Floor Lamp", "LED Desk Lamp"),
                     {"height": ("18 in.", "24 in.", "28 in.")},
                     {"color": ("Brushed Nickel", "Matte Black", "White", "Brass")},
                     ("table lamp", "desk lamp", "floor lamp"), ("reading light", "bedside light"),
                     "Decorative lamp with fabric shade; bulb not included."),
    "ceiling_fan": _C("lighting", 1.0, ("Hampton Bay", "Hunter", "Home Decorators Collection"),
                      ("Ceiling Fan with Light Kit", "LED Ceiling Fan with Remote", "Indoor Ceiling Fan"),
                      {"size": ("44 in.", "52 in.", "60 in.")}, {"finish": _FINISH[1:] + ("White",)},
                      ("ceiling fan", "ceiling fan with light"), ("overhead fan", "roof fan"),
                      "Quiet reversible motor with integrated LED light and remote."),
    "rug": _C("decor", 1.1, _DECOR, ("Area Rug", "Indoor Area Rug", "Shag Area Rug", "Runner Rug"),
              {"size": ("2 ft. x 3 ft.", "5 ft. x 7 ft.", "8 ft. x 10 ft."), "color": _COLORS[:5]},
              {"material": ("Wool", "Polypropylene", "Jute")},
              ("area rug", "rug"), ("carpet", "floor carpet", "mat"),
              "Stain-resistant rug with a low pile, for living room or bedroom."),
    "rug_pad": _C("decor", 0.6, ("Gorilla Grip", "Mohawk Home", "Safavieh"),
                  ("Non-Slip Rug Pad", "Rug Gripper Pad", "Felt Rug Pad"),
                  {"size": ("2 ft. x 3 ft.", "5 ft. x 7 ft.", "8 ft. x 10 ft.")}, {},
                  ("rug pad", "rug gripper"), ("carpet underlay", "anti slip underlay"),
                  "Cushioned pad that keeps rugs from sliding."),
    "sofa": _C("decor", 1.0, ("StyleWell", "Ashley", "Home Decorators Collection", "Zinus"),
               ("Sofa", "Sectional Sofa", "Loveseat", "Sleeper Sofa"), {"color": _COLORS},
               {"material": ("Linen", "Velvet", "Faux Leather", "Microfiber"), "seats": ("2-Seat", "3-Seat")},
               ("sofa", "sectional sofa", "loveseat"), ("couch", "settee", "sectional couch"),
               "Upholstered seating with solid wood frame and removable cushions."),
    "sofa_cover": _C("decor", 0.5, ("SureFit", "Easy-Going", "Home Decorators Collection"),
                     ("Sofa Slipcover", "Stretch Sofa Cover", "Sofa Arm Covers"), {"color": _COLORS},
                     {"seats": ("2-Seat", "3-Seat")}, ("sofa cover", "slipcover"),
                     ("couch cover", "settee protector"),
                     "Machine-washable stretch cover that protects upholstery."),
    "lawn_mower": _C("outdoor", 1.0, ("Toro", "Honda", "Ryobi", "EGO", "Craftsman"),
                     ("Walk Behind Lawn Mower", "Lawn Mower", "Mulching Lawn Mower"),
                     {"deck": ("21 in.", "30 in."), "drive": ("Push", "Self-Propelled"),
                      "power": ("Gas", "Electric", "40V Cordless", "56V Cordless")}, {},
                     ("lawn mower", "mower", "push mower"), ("lawnmower", "grass cutter"),
                     "Mows, mulches and bags with a height-adjustable deck."),
    "mower_blade": _C("outdoor", 0.5, ("Toro", "Honda", "Craftsman", "MaxPower"),
                      ("Replacement Mower Blade", "Mulching Blade for Lawn Mower", "Lawn Mower Blade"),
                      {"deck": ("21 in.", "30 in.")}, {}, ("mower blade", "lawn mower blade"),
                      ("mower knife", "cutting blade"), "High-lift replacement blade, pre-sharpened."),
    "refrigerator": _C("appliances", 1.0, ("Samsung", "LG", "Whirlpool", "GE", "Frigidaire"),
                       ("Refrigerator", "Refrigerator with Ice Maker", "Smart Refrigerator"),
                       {"capacity": ("18 cu. ft.", "25 cu. ft.", "28 cu. ft."),
                        "style": ("French Door", "Side by Side", "Top Freezer")},
                       {"finish": ("Fingerprint Resistant Stainless Steel", "Black Stainless Steel",
                                   "White")},
                       ("refrigerator", "french door refrigerator"), ("fridge", "fridge freezer"),
                       "Full-size refrigerator with adjustable shelves and LED lighting."),
    "water_filter": _C("appliances", 0.6, ("Samsung", "LG", "Whirlpool", "GE", "Frigidaire"),
                       ("Refrigerator Water Filter", "Replacement Refrigerator Water Filter",
                        "Ice and Water Filter"), {}, {"pack": ("1-Pack", "2-Pack", "3-Pack")},
                       ("refrigerator water filter", "water filter"), ("fridge filter", "fridge cartridge"),
                       "Filters water and ice; replace every six months."),
}
TOOL_COLORS = {"DeWalt": "Yellow", "Milwaukee": "Red", "Makita": "Teal", "Ryobi": "Green",
               "Bosch": "Blue", "Ridgid": "Orange"}
ADJECTIVES = {"tools": ("XR", "Pro", "Heavy Duty", "Compact"), "plumbing": ("Classic", "Modern", "Arbor"),
              "paint": ("Premium Plus", "Ultra", "Marquee"), "lighting": ("Classic", "Modern", "Vintage"),
              "decor": ("Modern", "Traditional", "Farmhouse"), "outdoor": ("Recycler", "Super", "Pro"),
              "appliances": ("Smart", "Counter Depth", "Energy Star")}
# Pairs that share surface words but answer a different need: hard negatives (label ~1.33).
_HARD_PAIRS = (("drill", "drill_bits"), ("faucet", "faucet_parts"), ("paint", "paint_tools"),
               ("light_bulb", "table_lamp"), ("rug", "rug_pad"), ("sofa", "sofa_cover"),
               ("lawn_mower", "mower_blade"), ("refrigerator", "water_filter"))
HARD_NEGATIVES: dict[str, tuple[str, ...]] = {a: (b,) for x, y in _HARD_PAIRS for a, b in ((x, y), (y, x))}
# What tends to be bought next (drill -> bits -> batteries): drives the session generator.
CO_PURCHASE: dict[str, tuple[str, ...]] = {
    "drill": ("drill_bits", "battery"), "drill_bits": ("battery", "drill"), "battery": ("drill_bits",),
    "faucet": ("faucet_parts",), "faucet_parts": ("faucet",), "paint": ("paint_tools",),
    "paint_tools": ("paint",), "ceiling_fan": ("light_bulb",), "light_bulb": ("table_lamp", "ceiling_fan"),
    "table_lamp": ("light_bulb",), "rug": ("rug_pad",), "rug_pad": ("rug",), "sofa": ("sofa_cover", "rug"),
    "sofa_cover": ("sofa",), "lawn_mower": ("mower_blade", "battery"), "mower_blade": ("lawn_mower",),
    "refrigerator": ("water_filter",), "water_filter": ("refrigerator",),
}
USER_CATEGORIES = ("drill", "faucet", "paint", "ceiling_fan", "light_bulb", "rug", "sofa", "lawn_mower",
                   "refrigerator")
STANDALONE_ATTRS = ("finish", "color", "color_temp", "material")  # may form a query on their own
RELEVANT_SCORE = 2.4  # latent score of a one-attribute miss: the least relevant product a query judges
# (pattern, alternatives) rewrites of attribute values as shoppers type them.
_UNIT_VARIANTS = [
    (r"(\d+)w equivalent", (r"\1w", r"\1 watt", r"\1 watt equivalent")),
    (r"(\d+) ft\. x (\d+) ft\.", (r"\1x\2", r"\1 x \2", r"\1 ft x \2 ft")),
    (r"(\d+) in\.", (r"\1 inch", r"\1in", r"\1 in")), (r"(\d+) gal\.", (r"\1 gallon", r"\1 gal")),
    (r"(\d+) qt\.", (r"\1 quart", r"\1 qt")), (r"(\d+)-pack", (r"\1 pack", r"\1pk")),
    (r"(\d+)-piece", (r"\1 piece", r"\1pc")), (r"(\d+)v max", (r"\1v", r"\1 volt")),
    (r"(\d+)v\b", (r"\1 volt",)), (r"cu\. ft\.", ("cu ft", "cubic feet")),
]
_ATTR_SYNONYMS = {"gray": "grey", "brushed nickel": "satin nickel", "oil rubbed bronze": "bronze",
                  "spot resist stainless": "stainless", "daylight": "5000k", "soft white": "warm white",
                  "fingerprint resistant stainless steel": "stainless steel", "faux leather": "leather",
                  "polypropylene": "synthetic", "self-propelled": "self propelled"}
_STOP = {"with", "for", "and", "the"}


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and seed of a synthetic catalog; the same config always gives the same data."""

    n_products: int = 3000
    n_queries: int = 660  # about 10% of queries land in the test split
    judged_per_query: int = 6  # judged per query besides its relevant ones: near misses, negatives
    n_users: int = 1000  # sessions for recommendation
    seed: int = 0
    # Every product relevant to a query (latent score >= RELEVANT_SCORE) is judged, so the rerank
    # protocol's unjudged candidates are true negatives; intents are kept to those with this many.
    min_relevant_per_query: int = 8
    max_relevant_per_query: int = 16

    def __post_init__(self) -> None:
        for name in ("n_products", "n_queries", "judged_per_query", "n_users", "seed",
                     "min_relevant_per_query", "max_relevant_per_query"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (name != "seed" and value < 1):
                kind = "an integer" if name == "seed" else "a positive integer"
                raise LeanrankError(f"SyntheticConfig.{name} must be {kind}, got {value!r}")
        if self.n_products < len(CATEGORIES):
            raise LeanrankError(f"SyntheticConfig.n_products must be at least {len(CATEGORIES)} "
                                f"(one per category), got {self.n_products}")
        if self.judged_per_query > self.n_products // 2:
            raise LeanrankError(f"SyntheticConfig.judged_per_query ({self.judged_per_query}) must be at "
                                f"most half of n_products ({self.n_products})")
        if self.min_relevant_per_query > self.max_relevant_per_query:
            raise LeanrankError(f"SyntheticConfig.min_relevant_per_query ({self.min_relevant_per_query}) must "
                                f"be at most max_relevant_per_query ({self.max_relevant_per_query})")


@dataclass
class SyntheticCatalog:
    """Search judgments (Home Depot 1..3 scale), the product records, and per-user sessions."""

    search: SearchDataset
    products: list[dict]  # id, title, brand, category, attributes, description
    sessions: list[list[str]]  # per user, product ids in chronological order
    # query -> its hidden intent: (category, brand or None, {attribute: value}, attribute_only)
    intents: dict[str, tuple] = field(default_factory=dict)

    @cached_property
    def _by_id(self) -> dict[str, dict]:
        return {p["id"]: p for p in self.products}

    def oracle_score(self, query: str, product_id: str) -> float:
        """The generator's latent relevance (1..3) of a product to a query: the ranking ceiling.

        It ranks by the hidden intent, so it sees through synonyms and typos and knows the hard
        negatives; only rater noise and ties keep its NDCG below 1.
        """
        if query not in self.intents or product_id not in self._by_id:
            raise LeanrankError(f"no synthetic intent for query {query!r} or no product {product_id!r}")
        return _score(self._by_id[product_id], self.intents[query])


def make_catalog(config: SyntheticConfig = SyntheticConfig()) -> SyntheticCatalog:
    """Build the catalog, queries with graded judgments, and sessions from ``config.seed``."""
    products, judgeable = _make_products(config.n_products, random.Random(f"{config.seed}:products"))
    judgments, intents = _make_judgments(products, judgeable, config, random.Random(f"{config.seed}:queries"))
    sessions = _make_sessions(products, config.n_users, random.Random(f"{config.seed}:sessions"))
    judged = {j.product_id for j in judgments}
    search = SearchDataset(
        name="synthetic",
        titles={p["id"]: p["title"] for p in products},
        judgments=judgments,
        labels=HOMEDEPOT_LABELS,
        descriptions={p["id"]: p["description"] for p in products},
        report={"generator": "leanrank.data.synthetic", "config": asdict(config),
                "never_judged_products": len(products) - len(judged)},
    )
    return SyntheticCatalog(search=search, products=products, sessions=sessions, intents=intents)


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _make_products(n: int, rng: random.Random) -> tuple[list[dict], list[int]]:
    keys = list(CATEGORIES)
    cats = keys + rng.choices(keys, [CATEGORIES[k].weight for k in keys], k=n - len(keys))
    rng.shuffle(cats)
    products, judgeable, seen = [], [], set()
    for i, key in enumerate(cats):
        c = CATEGORIES[key]
        brand = rng.choice(c.brands)
        pre = {a: rng.choice(v) for a, v in c.pre.items()}
        post = {a: rng.choice(v) for a, v in c.post.items()}
        if brand in TOOL_COLORS and c.dept == "tools":
            post["color"] = TOOL_COLORS[brand]
        words = [brand] + ([rng.choice(ADJECTIVES[c.dept])] if rng.random() < 0.25 else [])
        words += [v for v in pre.values() if rng.random() > 0.1]  # some attributes stay off the title
        words.append(rng.choice(c.nouns))
        tail = [v for v in post.values() if rng.random() > 0.1]
        title = " ".join(words) + (", " + ", ".join(tail) if tail else "")
        attrs = {**pre, **post}
        specs = "; ".join(f"{a.replace('_', ' ')}: {v}" for a, v in attrs.items())
        products.append({"id": f"P{i + 1:06d}", "title": title, "brand": brand, "category": key,
                         "attributes": attrs, "description": f"{c.blurb} {specs}.".replace(" .", ".")})
        if key not in seen or rng.random() > 0.08:  # ~8% are never judged
            judgeable.append(i)
        seen.add(key)
    return products, judgeable


def _score(p: dict, intent: tuple) -> float:
    """Latent relevance on 1..3 of product ``p`` for ``intent = (category, brand, attrs, attr_only)``."""
    cat, brand, attrs, attr_only = intent
    pc = p["category"]
    if attr_only:
        if all(v in p["attributes"].values() for v in attrs.values()):
            return 3.0 if pc == cat else 2.6
        return 1.7 if pc == cat else 1.0
    if pc == cat:
        miss = sum(p["attributes"].get(a) != v for a, v in attrs.items())
        miss += brand is not None and p["brand"] != brand
        return max(1.9, 3.0 - 0.6 * miss)
    if pc in HARD_NEGATIVES.get(cat, ()):
        return 1.3
    return 1.7 if CATEGORIES[pc].dept == CATEGORIES[cat].dept else 1.0


def _rate(score: float, rng: random.Random) -> float:
    """Mean of three raters' integer votes, as in Home Depot (1, 1.33, 1.67, ..., 3)."""
    votes = [min(3, max(1, round(score + rng.gauss(0, 0.35)))) for _ in range(3)]
    return round(sum(votes) / 3, 2)


def _intent(p: dict, rng: random.Random) -> tuple:
    # Broad kinds are rare: a big catalog has too many exact matches to judge them all (_relevant).
    kind = rng.choices(("cat", "brand_cat", "cat_attr", "brand_cat_attr", "attr"), (3, 12, 30, 45, 10))[0]
    attrs = p["attributes"]
    standalone = [a for a in STANDALONE_ATTRS if a in attrs]
    if kind == "attr" and standalone:
        name = rng.choice(standalone)
        return p["category"], None, {name: attrs[name]}, True
    brand = p["brand"] if kind.startswith("brand") else None
    chosen: dict = {}
    if kind.endswith("attr") and attrs:
        names = rng.sample(sorted(attrs), min(len(attrs), 2 if rng.random() < 0.2 else 1))
        chosen = {a: attrs[a] for a in names}
    return p["category"], brand, chosen, False


def _say(value: str, rng: random.Random) -> str:
    """An attribute value as a shopper might type it (unit variants, colloquial synonyms)."""
    v = value.lower()
    if v in _ATTR_SYNONYMS and rng.random() < 0.4:
        return _ATTR_SYNONYMS[v]
    for pattern, alternatives in _UNIT_VARIANTS:
        if re.search(pattern, v) and rng.random() < 0.6:
            v = re.sub(pattern, rng.choice(alternatives), v)
    return v


def _typo(token: str, rng: random.Random) -> str:
    i = rng.randrange(len(token) - 1)
    op = rng.randrange(3)
    if op == 0:
        return token[:i] + token[i + 1] + token[i] + token[i + 2:]
    return token[:i] + token[i + 1:] if op == 1 else token[:i] + token[i] + token[i:]


def _render(intent: tuple, rng: random.Random) -> str:
    cat, brand, attrs, attr_only = intent
    c = CATEGORIES[cat]
    name = rng.choice(c.synonyms if rng.random() < 0.3 else c.phrases)
    said = [_say(v, rng) for v in attrs.values()]
    if attr_only:
        parts = said
    elif rng.random() < 0.6:
        parts = ([brand.lower()] if brand else []) + said + [name]
    else:
        parts = ([brand.lower()] if brand else []) + [name] + said
    tokens = re.sub(r"[,/()]", " ", " ".join(parts)).split()
    tokens = [_typo(t, rng) if t.isalpha() and len(t) >= 3 and rng.random() < 0.15 else t for t in tokens]
    return " ".join(tokens)


def _make_judgments(products: list[dict], judgeable: list[int], config: SyntheticConfig,
                    rng: random.Random) -> tuple[list[Judgment], dict[str, tuple]]:
    index: dict[str, dict] = {"cat": defaultdict(list), "value": defaultdict(list), "token": defaultdict(list),
                              "all_cat": defaultdict(list), "all_value": defaultdict(list),
                              "facet": defaultdict(lambda: defaultdict(set))}
    for i, p in enumerate(products):  # every product, judgeable or not, for the relevant sets
        index["all_cat"][p["category"]].append(i)
        index["facet"][p["category"]][None, p["brand"]].add(i)
        for a, v in p["attributes"].items():
            index["facet"][p["category"]][a, v].add(i)
        for v in dict.fromkeys(p["attributes"].values()):
            index["all_value"][v].append(i)
    for i in judgeable:
        p = products[i]
        index["cat"][p["category"]].append(i)
        for v in dict.fromkeys(p["attributes"].values()):
            index["value"][v].append(i)
        for t in dict.fromkeys(_tokens(p["title"])):
            index["token"][t].append(i)
    judgments: list[Judgment] = []
    intents: dict[str, tuple] = {}
    bounds = (config.min_relevant_per_query, config.max_relevant_per_query)
    for _ in range(config.n_queries * 50):
        if len(intents) == config.n_queries:
            break
        seed = rng.choice(judgeable)
        intent = _intent(products[seed], rng)
        relevant = _relevant(intent, products, index, *bounds)
        if relevant is None:
            continue
        query = _render(intent, rng)
        if not query or query in intents:
            continue
        intents[query] = intent
        judged = relevant + _negatives(intent, relevant, query, products, judgeable, index,
                                       config.judged_per_query, rng)
        rng.shuffle(judged)
        for i in judged:
            label = _rate(_score(products[i], intent), rng)
            judgments.append(Judgment(query, products[i]["id"], label, HOMEDEPOT_LABELS.gain(label)))
    if len(intents) < config.n_queries:
        raise LeanrankError(f"could only make {len(intents)} distinct queries with "
                            f"{bounds[0]}..{bounds[1]} relevant products each; lower n_queries or "
                            f"min_relevant_per_query, or raise n_products or max_relevant_per_query")
    return judgments, intents


def _window(pool: list[int], n: int, rng: random.Random) -> list[int]:
    """A random run of at most ``n`` items (pools are in random order), so big catalogs stay fast."""
    if len(pool) <= n:
        return pool
    start = rng.randrange(len(pool) - n + 1)
    return pool[start:start + n]


def _relevant(intent: tuple, products: list[dict], index: dict, lo: int, hi: int) -> list[int] | None:
    """The products a query must judge: whole relevance levels, best first, as many as ``hi`` allows.

    Levels are latent scores >= RELEVANT_SCORE (exact matches, then one-attribute misses). Judging
    every product of a level means no unjudged candidate of the rerank protocol outranks a judged
    one for a ranker that understands the query. None when fewer than ``lo`` fit: the intent is too
    broad (its exact matches alone exceed ``hi``) or too narrow.
    """
    cat, brand, attrs, attr_only = intent
    if attr_only:
        pool = list(dict.fromkeys(index["all_cat"][cat] + index["all_value"][next(iter(attrs.values()))]))
        by_score: dict[float, list[int]] = defaultdict(list)
        for i in pool:
            score = _score(products[i], intent)
            if score >= RELEVANT_SCORE:
                by_score[score].append(i)
        levels = [by_score[s] for s in sorted(by_score, reverse=True)]
        if sum(map(len, levels)) > hi:
            return None  # the query does not name the category, so its levels are near ties: judge all
    else:  # same category, matching every named facet (3.0) or all but one (2.4), as in _score
        facets = index["facet"][cat]
        named = [facets[a, v] for a, v in attrs.items()] + ([facets[None, brand]] if brand else [])
        exact = set.intersection(*named) if named else set(index["all_cat"][cat])
        if len(exact) > hi:
            return None
        partial = set().union(*(set.intersection(*rest) if (rest := named[:j] + named[j + 1:])
                                else set(index["all_cat"][cat]) for j in range(len(named)))) - exact
        levels = [sorted(exact), sorted(partial)]
    chosen: list[int] = []
    for level in levels:
        if len(chosen) + len(level) > hi:
            break
        chosen += level
    return chosen if len(chosen) >= lo else None


def _negatives(intent: tuple, relevant: list[int], query: str, products: list[dict], judgeable: list[int],
               index: dict, k: int, rng: random.Random) -> list[int]:
    """``k`` more judged products, Home Depot-like: near misses, hard and lexical negatives."""
    cat, brand, attrs, attr_only = intent
    dept, by_cat, n = CATEGORIES[cat].dept, index["cat"], max(300, 4 * k)
    taken = set(relevant)
    near = [i for i in _window(by_cat[cat], n, rng) if i not in taken]  # same category, lower level
    lexical = list(dict.fromkeys(
        i for t in _tokens(query) if t not in _STOP for i in _window(index["token"].get(t, []), n, rng)
        if CATEGORIES[products[i]["category"]].dept != dept))
    if attr_only:
        value = next(iter(attrs.values()))
        elsewhere = [i for i in _window(index["value"][value], n, rng)
                     if products[i]["category"] != cat and i not in taken]
        plan = [(near, 0.45), (elsewhere, 0.3), (lexical, 0.25)]
    else:
        hard = [i for h in HARD_NEGATIVES.get(cat, ()) for i in _window(by_cat[h], n, rng)]
        hard_brand = [i for i in hard if products[i]["brand"] == brand]
        related = [i for c, ids in by_cat.items() if c != cat and CATEGORIES[c].dept == dept
                   and c not in HARD_NEGATIVES.get(cat, ()) for i in _window(ids, n, rng)]
        plan = [(near, 0.3), (hard_brand, 0.2), (hard, 0.15), (related, 0.15), (lexical, 0.2)]
    k = min(k, len(judgeable) - len(taken))  # at most what is left
    chosen: dict[int, None] = {}
    for pool, share in plan + [(pool, 1.0) for pool, _ in plan]:  # second pass fills any shortfall
        want = min(k - len(chosen), max(1, round(share * k)))
        if want:
            fresh = [i for i in pool if i not in chosen and i not in taken]
            chosen.update(dict.fromkeys(rng.sample(fresh, min(want, len(fresh)))))
    while len(chosen) < k:
        i = rng.choice(judgeable)
        if i not in taken:
            chosen.setdefault(i)
    return list(chosen)


def _make_sessions(products: list[dict], n_users: int, rng: random.Random) -> list[list[str]]:
    """Users stick to 1-3 departments, favour brands and popular items, and follow co-purchases."""
    popularity = [rng.paretovariate(1.3) for _ in products]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(products):
        groups[(p["category"], None)].append(i)
        groups[(p["category"], p["brand"])].append(i)
    pools = {key: (ids, list(itertools.accumulate(popularity[i] for i in ids)))
             for key, ids in groups.items()}

    def pick(cat: str, brand: str | None) -> int:
        ids, cum = pools.get((cat, brand)) or pools[(cat, None)]
        return rng.choices(ids, cum_weights=cum)[0]

    sessions = []
    for _ in range(n_users):
        cats = rng.sample(USER_CATEGORIES, rng.choice((1, 1, 2, 2, 3)))
        favourite = {c: rng.choice(CATEGORIES[c].brands) for c in CATEGORIES}
        first = rng.choice(cats)
        items = [pick(first, favourite[first] if rng.random() < 0.6 else None)]
        for _ in range(rng.randint(5, 30) - 1):
            last = products[items[-1]]
            r = rng.random()
            if r < 0.45:
                nxt = rng.choice(CO_PURCHASE[last["category"]])
                brand = last["brand"] if rng.random() < 0.7 else favourite[nxt]
            elif r < 0.65:
                nxt, brand = last["category"], last["brand"]
            else:
                nxt = rng.choice(cats)
                brand = favourite[nxt] if rng.random() < 0.6 else None
            item = pick(nxt, brand)
            items.append(item if item != items[-1] else pick(nxt, None))
        sessions.append([products[i]["id"] for i in items])
    return sessions
