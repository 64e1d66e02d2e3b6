"""The words that name each COCO category in free text: the name, plurals and common synonyms.

Used by the `unseen_category` validation flag. Ambiguous words are left out on purpose:
"orange" is mostly a colour, "tie" mostly a verb, "bat" and "glass" mostly something else,
so those categories are only recognised by their unambiguous forms.
"""

from __future__ import annotations

import re

# category -> words naming it (singular forms; plurals are added by `_with_plurals`)
_WORDS: dict[str, tuple[str, ...]] = {
    "person": (
        "person",
        "people",
        "man",
        "men",
        "woman",
        "women",
        "boy",
        "girl",
        "child",
        "children",
        "kid",
        "guy",
        "lady",
        "ladies",
        "baby",
        "babies",
        "toddler",
        "player",
        "skier",
        "surfer",
        "skateboarder",
        "snowboarder",
        "pedestrian",
        "passenger",
        "rider",
        "crowd",
        "adult",
        "teenager",
        "gentleman",
        "gentlemen",
    ),
    "bicycle": ("bicycle", "bike", "cyclist"),
    "car": ("car", "sedan", "taxi", "suv"),
    "motorcycle": ("motorcycle", "motorbike", "scooter"),
    "airplane": ("airplane", "aeroplane", "plane", "jet", "airliner", "aircraft"),
    "bus": ("bus", "buses"),
    "train": ("train", "locomotive"),
    "truck": ("truck", "pickup truck", "lorry"),
    "boat": ("boat", "ship", "sailboat", "canoe", "kayak", "yacht"),
    "traffic light": ("traffic light", "stoplight", "traffic signal"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench", "benches"),
    "bird": ("bird", "pigeon", "seagull", "duck", "goose", "geese", "parrot"),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "puppies"),
    "horse": ("horse", "pony", "ponies"),
    "sheep": ("sheep", "lamb"),
    "cow": ("cow", "cattle", "bull", "calf", "calves"),
    "elephant": ("elephant",),
    "bear": ("bear", "polar bear", "grizzly"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "rucksack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse"),
    "tie": ("necktie", "bow tie"),
    "suitcase": ("suitcase", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis",),
    "snowboard": ("snowboard",),
    "sports ball": ("ball", "soccer ball", "tennis ball", "football", "basketball", "volleyball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat",),
    "baseball glove": ("baseball glove", "baseball mitt", "mitt"),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard",),
    "tennis racket": ("tennis racket", "racket", "racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass", "wine glasses", "wineglass"),
    "cup": ("cup", "mug"),
    "fork": ("fork",),
    "knife": ("knife", "knives"),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "sandwiches"),
    "orange": ("oranges",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake"),
    "chair": ("chair", "armchair", "stool"),
    "couch": ("couch", "couches", "sofa"),
    "potted plant": ("potted plant", "houseplant", "plant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet",),
    "tv": ("tv", "television", "tv screen"),
    "laptop": ("laptop", "notebook computer"),
    "mouse": ("computer mouse", "mouse"),
    "remote": ("remote control", "remote controls", "controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "cellphone", "phone", "smartphone", "mobile phone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book", "bookshelf", "bookshelves"),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy", "stuffed animal"),
    "hair drier": ("hair drier", "hair dryer", "blow dryer"),
    "toothbrush": ("toothbrush", "toothbrushes"),
}

_ES_ENDINGS = ("s", "x", "ch", "sh")
_NO_PLURAL = {
    "people",
    "men",
    "women",
    "children",
    "ladies",
    "babies",
    "sheep",
    "cattle",
    "gentlemen",
    "geese",
    "puppies",
    "ponies",
    "calves",
    "knives",
    "crowd",
    "skis",
    "scissors",
    "luggage",
    "broccoli",
    "oranges",
    "sandwiches",
    "couches",
    "benches",
    "buses",
    "bookshelves",
    "toothbrushes",
    "wine glasses",
    "remote controls",
}


def _plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(_ES_ENDINGS) else "s")


def _with_plurals(words: tuple[str, ...]) -> set[str]:
    return {w for word in words for w in (word, *(() if word in _NO_PLURAL else (_plural(word),)))}


# word or phrase (lower case) -> the COCO category it names
WORD_TO_CATEGORY: dict[str, str] = {
    w: cat for cat, words in _WORDS.items() for w in _with_plurals(words)
}
SINGLE_WORDS: frozenset[str] = frozenset(w for w in WORD_TO_CATEGORY if " " not in w)
# first word of a multi-word name -> the full names starting with it
PHRASES_BY_FIRST_WORD: dict[str, tuple[str, ...]] = {}
for _phrase in sorted(w for w in WORD_TO_CATEGORY if " " in w):
    _first = _phrase.split(" ", 1)[0]
    PHRASES_BY_FIRST_WORD[_first] = (*PHRASES_BY_FIRST_WORD.get(_first, ()), _phrase)

# every ASCII character but a-z becomes a space, so str.split() yields the words
_NON_LETTERS = str.maketrans({c: " " for c in map(chr, range(128)) if not "a" <= c <= "z"})


def categories_named(text_lower: str) -> set[str]:
    """COCO categories that lower-case `text_lower` names (by name, plural or synonym)."""
    words = set(text_lower.translate(_NON_LETTERS).split())
    found = {WORD_TO_CATEGORY[w] for w in words & SINGLE_WORDS}
    for first in words & PHRASES_BY_FIRST_WORD.keys():
        for phrase in PHRASES_BY_FIRST_WORD[first]:
            if phrase in text_lower and re.search(rf"\b{phrase}\b", text_lower):
                found.add(WORD_TO_CATEGORY[phrase])
    return found


def words_for(category: str) -> list[str]:
    """Every word or phrase naming `category`, longest first (for matching in text)."""
    return sorted((w for w, c in WORD_TO_CATEGORY.items() if c == category), key=len, reverse=True)
