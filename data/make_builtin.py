"""Write the kit's built-in datasets (seeded, deterministic): ``python data/make_builtin.py``.

Every file under ``data/<task>/`` is produced by this script from the word lists and templates
below; nothing is copied from a public dataset. Re-running it reproduces the committed files byte
for byte (a test checks this and ``data/SHA256SUMS``).
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {"train": 600, "dev": 200, "test": 200}

# ----------------------------------------------------------------------------- sentiment
ITEMS = {
    "film": ["film", "movie", "picture", "documentary", "thriller", "comedy", "drama", "sequel"],
    "book": ["novel", "book", "memoir", "short story collection", "biography", "cookbook"],
    "place": ["restaurant", "cafe", "hotel", "bakery", "bistro", "pizzeria", "bar"],
    "thing": ["phone", "laptop", "blender", "backpack", "headset", "camera", "jacket", "kettle"],
}
ASPECTS = {
    "film": ["acting", "plot", "soundtrack", "dialogue", "ending", "pacing", "cast"],
    "book": ["writing", "story", "characters", "ending", "prose", "pacing"],
    "place": ["service", "food", "staff", "coffee", "atmosphere", "menu", "prices"],
    "thing": ["battery", "screen", "design", "sound", "build quality", "price", "zipper"],
}
POS = ["wonderful", "excellent", "delightful", "superb", "charming", "brilliant", "lovely",
       "impressive", "enjoyable", "fantastic", "solid", "moving", "clever", "reliable", "warm"]
NEG = ["awful", "dreadful", "boring", "disappointing", "terrible", "dull", "clumsy", "bland",
       "tedious", "mediocre", "sloppy", "flimsy", "forgettable", "annoying", "weak"]
INTENS = ["", "", "really ", "truly ", "quite ", "absolutely ", "rather ", "genuinely "]
POS_VERDICTS = ["I loved it", "I would recommend it to anyone", "we will be back",
                "it was worth every penny", "it made my week", "I enjoyed every minute"]
NEG_VERDICTS = ["I regret it", "I would not recommend it", "we will not be back",
                "it was a waste of money", "it ruined my evening", "I was bored the whole time"]


# Implicit sentiment: no opinion word, the facts carry the polarity (harder zero-shot).
IMPLICIT = {
    "film": ([
        "I have already watched it {k} times.", "I kept thinking about the ending for days.",
        "The whole cinema applauded when the credits rolled.", "I bought the soundtrack on the way home.",
    ], [
        "Half the audience left before the end.", "I checked my watch {k} times during the {aspect}.",
        "I fell asleep twice before the {aspect} picked up.", "I asked for my money back at the box office.",
    ]),
    "book": ([
        "I finished it in one sitting.", "I have lent it to {k} friends already.",
        "I stayed up until three to find out how it ends.", "I ordered the author's other books the next day.",
    ], [
        "I gave up after {k} chapters.", "I had to reread every page of the {aspect} to follow it.",
        "It has been on my nightstand for months, unfinished.", "I sold it back to the shop the same week.",
    ]),
    "place": ([
        "We have booked the same table for next month.", "The staff remembered our names on our second visit.",
        "We stayed until closing because nobody wanted to leave.", "The {aspect} alone is worth the trip.",
    ], [
        "We waited {k}0 minutes and nobody apologised.", "The soup arrived cold and the bill arrived wrong.",
        "We left before dessert and ate at home.", "Our order was forgotten {k} times.",
    ]),
    "thing": ([
        "I bought a second one for my sister.", "After {k} years of daily use it still works like new.",
        "I have stopped looking at other brands.", "It survived a fall down the stairs without a scratch.",
    ], [
        "The {aspect} died after {k} hours.", "It fell apart after a week.",
        "I returned it the next day.", "The replacement broke in exactly the same way.",
    ]),
}


def a(word: str) -> str:
    """The word with its indefinite article."""
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def sentiment_row(rng: random.Random, label: int) -> dict:
    kind = rng.choice(list(ITEMS))
    item, aspect, other = rng.choice(ITEMS[kind]), *rng.sample(ASPECTS[kind], 2)
    words, opposites = (POS, NEG) if label else (NEG, POS)
    word, word2 = rng.sample(words, 2)
    opp = rng.choice(opposites)
    verdict = rng.choice(POS_VERDICTS if label else NEG_VERDICTS)
    intens = rng.choice(INTENS)
    pattern = rng.randint(0, 9)
    if pattern >= 7:  # implicit: facts only, sometimes after a hedge
        positives, negatives = IMPLICIT[kind]
        fact = rng.choice(positives if label else negatives).format(k=rng.randint(2, 5), aspect=aspect)
        hedge = rng.choice(["", "", f"It is {a(item)}. ", f"About the {item}: ", "Well. "])
        text = hedge + fact
    elif pattern == 0:
        text = f"The {item} was {intens}{word}."
    elif pattern == 1:
        text = f"The {aspect} of this {item} is {intens}{word}, and {verdict}."
    elif pattern == 2:  # contrast: the last clause decides
        text = f"The {other} was {opp}, but the {aspect} made up for it: {word}, and {verdict}."
    elif pattern == 3:  # negation of the opposite word
        text = f"This {item} is not {opp} at all; the {aspect} is {word}."
    elif pattern == 4:
        text = f"{verdict[0].upper() + verdict[1:]}: {a(intens + word)} {item} with {a(word2)} {aspect}."
    elif pattern == 5:
        text = f"I expected {a(opp)} {item}, yet it turned out {word}."
    else:
        text = f"{rng.choice(['Honestly', 'Overall', 'In short', 'Frankly'])}, {a(word)} {item}."
    return {"text": text, "label": label}


# ----------------------------------------------------------------------------- topic
TOPICS = ["World", "Sports", "Business", "Technology"]
COUNTRIES = ["Norland", "Vestria", "Kaloria", "Ostrava Republic", "Meridia", "Tarsia", "Belcoria"]
CITIES = ["Port Amsel", "Lindholm", "Carrow", "Sennet", "Valdora", "Brisk", "Hollin"]
TEAMS = ["the Harbor Hawks", "Lindholm United", "the Carrow Comets", "FC Sennet", "the Valdora Vipers"]
SPORTS = ["football", "basketball", "tennis", "cycling", "rugby", "hockey", "marathon"]
FIRMS = ["Orbis Freight", "Pellmann Bank", "Greystone Foods", "Altair Motors", "Nimbus Retail", "Kestrel Energy",
         "Harlow Insurance", "Tidewater Steel", "Brightwell Airlines", "Corvid Pharma"]
TECH = ["Quanta Labs", "ByteHarbor", "Lumen Devices", "Nodewise", "Synthex", "Cobalt Robotics"]
GADGETS = ["chip", "smartphone", "battery", "search engine", "robot", "satellite", "browser", "AI model"]
HEADLINES = {
    "World": [
        "{country} and {country2} sign border treaty after months of talks",
        "Protests continue in {city} as {country} parliament debates new constitution",
        "Prime minister of {country} visits {country2} to discuss refugees",
        "Floods force thousands to leave homes in northern {country}",
        "{country} holds snap election; opposition claims early lead",
        "UN envoy calls for ceasefire in {country} conflict",
    ],
    "Sports": [
        "{team} beat {team2} 3-1 to reach the {sport} final",
        "Star striker signs new contract with {team}",
        "{city} to host next year's {sport} championship",
        "Injury rules captain of {team} out for the season",
        "Record crowd watches {team} clinch the {sport} title",
        "Coach of {team} resigns after five straight defeats",
    ],
    "Business": [
        "{firm} shares jump {pct}% after strong quarterly profit",
        "{firm} to cut {jobs} jobs as sales slow",
        "Central bank of {country} raises interest rates again",
        "{firm} agrees to buy {firm2} in $4 billion deal",
        "Oil prices fall as demand weakens; {firm} lowers forecast",
        "Investors wary as {firm} misses revenue targets",
    ],
    "Technology": [
        "{tech} unveils faster {gadget} for laptops",
        "Researchers at {tech} build {gadget} that runs for a week on one charge",
        "{tech} fixes security flaw in its {gadget} software",
        "New {gadget} from {tech} promises cheaper cloud computing",
        "{tech} launches open-source {gadget} to rival big players",
        "Scientists test quantum {gadget} built by {tech}",
    ],
}
DESCRIPTIONS = {
    "World": ["Officials said talks would resume next week.", "Diplomats described the mood as tense.",
              "Aid groups warned of shortages in the region.", "The government declared a state of emergency."],
    "Sports": ["Fans celebrated late into the night.", "The match went to extra time.",
               "The league confirmed the schedule on Monday.", "Tickets sold out within hours."],
    "Business": ["Analysts had expected a smaller change.", "The company will report full results in May.",
                 "Markets reacted calmly to the news.", "Shareholders will vote on the plan next month."],
    "Technology": ["The device will ship later this year.", "Engineers say the design uses less power.",
                   "The update is available to download now.", "Developers can try a preview version."],
}


def topic_row(rng: random.Random, label: int) -> dict:
    topic = TOPICS[label]
    c1, c2 = rng.sample(COUNTRIES, 2)
    t1, t2 = rng.sample(TEAMS, 2)
    f1, f2 = rng.sample(FIRMS, 2)
    title = rng.choice(HEADLINES[topic]).format(
        country=c1, country2=c2, city=rng.choice(CITIES), team=t1, team2=t2, sport=rng.choice(SPORTS),
        firm=f1, firm2=f2, tech=rng.choice(TECH), gadget=rng.choice(GADGETS), pct=rng.randint(3, 19),
        jobs=f"{rng.randint(2, 40) * 100:,}",
    )
    return {"title": title, "description": rng.choice(DESCRIPTIONS[topic]), "label": label}


# ----------------------------------------------------------------------------- yes/no questions
# kind -> [(statement, question, options)]: "{x}" is the option
THINGS = {
    "bridge": [("It is made of {x}.", "is {name} made of {x}", ["stone", "steel", "wood", "concrete"]),
               ("It crosses {x}.", "does {name} cross {x}", ["the river Teal", "the Amsel canal", "a deep gorge", "the railway"])],
    "museum": [("It is dedicated to {x}.", "is {name} dedicated to {x}", ["maps", "clocks", "ships", "textiles"]),
               ("It is housed in {x}.", "is {name} housed in {x}", ["the old harbour", "a former mill", "the town hall", "a castle"])],
    "festival": [("It is held every {x}.", "is {name} held in {x}", ["spring", "summer", "autumn", "winter"]),
                 ("It is famous for {x}.", "is {name} famous for {x}", ["its music", "its food stalls", "its fireworks", "its parade"])],
    "ship": [("It was built in {x}.", "was {name} built in {x}", ["Port Amsel", "Carrow", "Lindholm", "Sennet"]),
             ("Its hull is painted {x}.", "is the hull of {name} painted {x}", ["red", "blue", "white", "green"])],
}
NAMES = ["Marlow", "Ashby", "Ferris", "Quill", "Hadley", "Orrin", "Talbot", "Wren", "Corby", "Elsdon"]
YEARS = list(range(1850, 2020, 7))


def yesno_row(rng: random.Random, label: int) -> dict:
    kind = rng.choice(list(THINGS))
    name = f"the {rng.choice(NAMES)} {kind}"
    values = [rng.choice(options) for _, _, options in THINGS[kind]]
    year = rng.choice(YEARS)
    facts = [statement.format(x=v) for (statement, _, _), v in zip(THINGS[kind], values, strict=True)]
    rng.shuffle(facts)
    passage = " ".join([f"{name[0].upper() + name[1:]} opened in {year}."] + facts)
    if rng.random() < 0.3:  # some questions are about the year instead
        asked = year if label else year + rng.choice([-10, -3, 4, 12])
        question = f"did {name} open in {asked}"
    else:
        i = rng.randrange(len(values))
        _, template, options = THINGS[kind][i]
        asked = values[i] if label else rng.choice([v for v in options if v != values[i]])
        question = template.format(name=name, x=asked)
    return {"passage": passage, "question": question, "label": label}


# ----------------------------------------------------------------------------- restaurant MR → text
R_NAMES = ["The Copper Kettle", "Blue Lantern", "The Olive Grove", "Saffron House", "The Red Door",
           "Harbour Lights", "The Wandering Fig", "Golden Spoon", "The Quiet Owl", "Maple Table",
           "The Salt Cellar", "Juniper", "The Brass Anchor", "Little Basil", "The Green Parrot"]
R_FIELDS = {
    "eatType": ["restaurant", "coffee shop", "pub"],
    "food": ["Italian", "French", "Japanese", "Indian", "Chinese", "English", "fast food"],
    "priceRange": ["cheap", "moderate", "high"],
    "customer rating": ["low", "average", "high"],
    "area": ["city centre", "riverside"],
    "familyFriendly": ["yes", "no"],
    "near": ["the Town Hall", "the train station", "the Art Gallery", "the Market", "the Cathedral"],
}


def _realise(mr: dict, rng: random.Random, style: int) -> str:
    name, eat = mr["name"], mr.get("eatType", "restaurant")
    parts = []
    if "food" in mr:
        food = mr["food"]
        parts.append(rng.choice([f"serves {food}" if food == "fast food" else f"serves {food} food",
                                 f"offers {food} dishes", f"has {a(food)} menu"]))
    if "priceRange" in mr:
        parts.append(rng.choice([f"has {mr['priceRange']} prices", f"is in the {mr['priceRange']} price range"]))
    if "customer rating" in mr:
        parts.append(rng.choice([f"has {a(mr['customer rating'])} customer rating", f"is rated {mr['customer rating']} by customers"]))
    if "area" in mr:
        parts.append(f"is in the {mr['area']} area" if mr["area"] == "riverside" else "is in the city centre")
    if "near" in mr:
        parts.append(f"is near {mr['near']}")
    if "familyFriendly" in mr:
        parts.append("is family friendly" if mr["familyFriendly"] == "yes" else "is not family friendly")
    rng.shuffle(parts)
    if style == 0:
        body = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
        return f"{name} is {a(eat)} that {body}."
    if style == 1:
        first, rest = parts[0], parts[1:]
        tail = (" It " + ", ".join(rest[:-1]) + (" and " if len(rest) > 1 else "") + rest[-1] + ".") if rest else ""
        return f"There is {a(eat)} called {name} which {first}.{tail}"
    half = (len(parts) + 1) // 2
    head, tail = parts[:half], parts[half:]
    text = f"{name} {' and '.join(head)}."
    if tail:
        text += f" This {eat} also {' and '.join(tail)}."
    return text


def restaurant_mr(rng: random.Random) -> dict:
    keys = rng.sample(list(R_FIELDS), rng.randint(2, 5))
    mr = {"name": rng.choice(R_NAMES)}
    for key in sorted(keys, key=list(R_FIELDS).index):
        mr[key] = rng.choice(R_FIELDS[key])
    return mr


def restaurant_row(rng: random.Random, label: int = 0) -> dict:
    mr = restaurant_mr(rng)
    n_refs = rng.randint(2, 4)
    refs = [_realise(mr, rng, style) for style in rng.sample(range(3), min(3, n_refs))]
    while len(refs) < n_refs:
        refs.append(_realise(mr, rng, rng.randrange(3)))
    mr_text = ", ".join(f"{k}[{v}]" for k, v in mr.items())
    return {"mr": mr_text, "references": refs}


# ----------------------------------------------------------------------------- instruction mixture
ANTONYMS = [("hot", "cold"), ("tall", "short"), ("early", "late"), ("happy", "sad"), ("open", "closed"),
            ("light", "dark"), ("fast", "slow"), ("full", "empty"), ("strong", "weak"), ("rich", "poor"),
            ("hard", "soft"), ("loud", "quiet"), ("wet", "dry"), ("young", "old"), ("clean", "dirty")]
INSTRUCTIONS = {
    "sentiment": ["Is the sentiment of this review positive or negative?",
                  "Classify the review as positive or negative."],
    "topic": ["Which topic is this headline about: World, Sports, Business or Technology?",
              "Name the section of the newspaper this headline belongs to (World, Sports, Business or Technology)."],
    "parity": ["Is this number even or odd?", "Answer even or odd for the number below."],
    "antonym": ["Give the opposite of this word.", "Write a word that means the opposite."],
    "describe": ["Write one sentence describing this restaurant.", "Turn these facts about a restaurant into a sentence."],
}


def instruction_row(rng: random.Random, label: int = 0) -> dict:
    task = rng.choice(list(INSTRUCTIONS))
    instruction = rng.choice(INSTRUCTIONS[task])
    if task == "sentiment":
        row = sentiment_row(rng, rng.randint(0, 1))
        inp, out = row["text"], ["negative", "positive"][row["label"]]
    elif task == "topic":
        row = topic_row(rng, rng.randrange(4))
        inp, out = row["title"], TOPICS[row["label"]]
    elif task == "parity":
        number = rng.randint(1, 999)
        inp, out = str(number), "even" if number % 2 == 0 else "odd"
    elif task == "antonym":
        a, b = rng.choice(ANTONYMS)
        inp, out = (a, b) if rng.random() < 0.5 else (b, a)
    else:
        row = restaurant_row(rng)
        inp, out = row["mr"], row["references"][0]
    answer_type = "free" if task == "describe" else "closed"  # closed: scored by exact match
    return {"task": task, "instruction": instruction, "input": inp, "output": out, "answer_type": answer_type}


# name -> (row maker, split sizes, number of classes: rows cycle through the labels so that
# every split is balanced; 1 for generation tasks)
GENERATORS = {
    "sentiment": (sentiment_row, SIZES, 2),
    "topic": (topic_row, SIZES, 4),
    "yesno": (yesno_row, {"train": 400, "dev": 150, "test": 150}, 2),
    "restaurant": (restaurant_row, {"train": 300, "dev": 50, "test": 50}, 1),
    "instructions": (instruction_row, {"train": 800, "dev": 200, "test": 200}, 1),
}
SEED = 20261125


def key_of(row: dict) -> str:
    return json.dumps({k: v for k, v in row.items() if k not in ("label", "references", "output")}, sort_keys=True)


def build(name: str) -> dict[str, list[dict]]:
    """Rows for each split; no source text appears in two splits."""
    make, sizes, num_classes = GENERATORS[name]
    rng = random.Random(f"{SEED}-{name}")
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, size in sizes.items():
        rows: list[dict] = []
        tries = 0
        while len(rows) < size:
            tries += 1
            if tries > 200 * size:
                raise RuntimeError(f"{name}/{split}: generator ran out of distinct rows")
            row = make(rng, len(rows) % num_classes)
            key = key_of(row)
            if key in seen:
                continue
            seen.add(key)
            rows.append(row)
        rng.shuffle(rows)
        splits[split] = rows
    return splits


def write_all(out: Path = HERE) -> dict[str, str]:
    """Write every task's split files under ``out`` and return {relative path: sha256}."""
    sums = {}
    for name in GENERATORS:
        for split, rows in build(name).items():
            path = out / name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
            path.write_bytes(data)
            sums[f"{name}/{split}.jsonl"] = hashlib.sha256(data).hexdigest()
    (out / "SHA256SUMS").write_text("".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))
    return sums


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for path, digest in write_all(target).items():
        print(digest[:16], path)
