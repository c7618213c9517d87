"""Write a general instruction dataset for the Gemma 3 270M lab: every text is written here, so the data is ours (CC0).

    .venv/bin/python scripts/make_instruct_data.py [--out DIR]

A base model continues text: asked a question, it rambles and repeats until it runs out of tokens. These
examples teach it the other habit: answer briefly, then stop. They are generated as templates × topics
(how-to steps, definitions, "tell me about", lists, yes/no with a reason, rewriting, arithmetic, polite
customer-service replies), every answer short and ending with a full stop. instruct-demo.jsonl is the
training set; instruct-demo-heldout.jsonl holds examples whose topics are not in training (for the
validation loss). The prompts of suites/why-finetune.toml are deliberately left out (no dog sitting, no Mars,
no Taylor Swift), so the before/after table measures habits, not memorized answers. Deterministic (fixed
seed): rerunning the script reproduces the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEED = 16
TRAIN_FILE = "instruct-demo.jsonl"
HELDOUT_FILE = "instruct-demo-heldout.jsonl"

# (task, three steps)
HOW_TO: list[tuple[str, list[str]]] = [
    (
        "make a cup of tea",
        ["Boil fresh water.", "Pour it over a tea bag in a cup.", "Wait three minutes, then remove the bag."],
    ),
    (
        "boil an egg",
        [
            "Put the egg in a pan of cold water.",
            "Bring it to a boil.",
            "Cook for eight minutes, then cool it in cold water.",
        ],
    ),
    (
        "plant a tree",
        ["Dig a hole twice as wide as the roots.", "Set the tree in it and fill the hole with soil.", "Water it well."],
    ),
    (
        "wash my hands properly",
        [
            "Wet your hands and add soap.",
            "Rub every part for twenty seconds.",
            "Rinse and dry them with a clean towel.",
        ],
    ),
    (
        "teach a dog to come when called",
        [
            'Say its name and "come" in a happy voice.',
            "Reward it with a treat when it reaches you.",
            "Practise a few times every day.",
        ],
    ),
    (
        "teach a puppy to lie down",
        [
            "Hold a treat near its nose.",
            "Lower the treat slowly to the floor.",
            'Say "down" and reward it when it lies down.',
        ],
    ),
    (
        "write a good email",
        [
            "Start with a clear subject line.",
            "Say what you need in the first sentence.",
            "Keep it short and end with a polite sign-off.",
        ],
    ),
    (
        "save money each month",
        ["Write down what you spend.", "Set aside a fixed amount on payday.", "Cut one expense you do not need."],
    ),
    (
        "fall asleep faster",
        [
            "Go to bed at the same time every night.",
            "Put screens away an hour before bed.",
            "Keep the bedroom dark and cool.",
        ],
    ),
    (
        "change a flat bicycle tyre",
        [
            "Take the wheel off and remove the tyre.",
            "Replace or patch the inner tube.",
            "Refit the tyre and pump it up.",
        ],
    ),
    (
        "learn a new language",
        [
            "Practise a little every day.",
            "Learn the most common words first.",
            "Speak with native speakers as soon as you can.",
        ],
    ),
    (
        "clean a window",
        [
            "Mix water with a little dish soap.",
            "Wash the glass with a soft cloth.",
            "Dry it with a squeegee or a paper towel.",
        ],
    ),
    (
        "start running",
        ["Begin with short runs mixed with walking.", "Run three times a week.", "Add a few minutes each week."],
    ),
    (
        "make a paper airplane",
        [
            "Fold a sheet of paper in half lengthwise.",
            "Fold the top corners down to the centre line.",
            "Fold the sides down to make wings.",
        ],
    ),
    (
        "cook rice",
        [
            "Rinse one cup of rice.",
            "Add two cups of water and bring it to a boil.",
            "Cover and simmer for fifteen minutes.",
        ],
    ),
    (
        "care for a houseplant",
        [
            "Give it bright, indirect light.",
            "Water it when the top of the soil is dry.",
            "Feed it once a month in spring and summer.",
        ],
    ),
    (
        "prepare for a job interview",
        ["Read about the company.", "Practise answers to common questions.", "Arrive a few minutes early."],
    ),
    (
        "make a fruit smoothie",
        [
            "Put fruit, yogurt and a splash of milk in a blender.",
            "Blend until smooth.",
            "Pour it into a glass and serve.",
        ],
    ),
    (
        "study for an exam",
        ["Make a study plan.", "Review a little every day.", "Test yourself with practice questions."],
    ),
    (
        "tie a tie",
        [
            "Drape the tie with the wide end longer.",
            "Cross the wide end over, loop it up and through.",
            "Pull it down through the knot and tighten.",
        ],
    ),
]
HOW_TO_TEMPLATES = ["How do I {x}?", "Tell me how to {x}.", "What are the steps to {x}?", "How can I {x}?",
                    "Explain how to {x}.", "give me steps to {x}"]  # fmt: skip

# (term, definition)
DEFINITIONS: list[tuple[str, str]] = [
    ("photosynthesis", "the process plants use to turn sunlight, water and carbon dioxide into sugar and oxygen"),
    ("gravity", "the force that pulls objects toward each other, such as toward the Earth"),
    ("a noun", "a word that names a person, place, thing or idea"),
    ("a verb", 'a word that describes an action or a state, such as "run" or "be"'),
    ("democracy", "a system of government in which citizens choose their leaders by voting"),
    ("an atom", "the smallest unit of a chemical element"),
    ("inflation", "a general rise in prices, so that money buys less over time"),
    ("a volcano", "an opening in the Earth's crust where molten rock, ash and gas escape"),
    ("an algorithm", "a step-by-step set of instructions for solving a problem"),
    ("evaporation", "the change of a liquid into a gas, such as water drying in the sun"),
    ("a mammal", "a warm-blooded animal with hair that feeds its young with milk"),
    ("a budget", "a plan for how to spend and save money"),
    ("a synonym", "a word that means the same or nearly the same as another word"),
    ("an ecosystem", "a community of living things and the environment they share"),
    ("a password", "a secret word or phrase used to prove who you are"),
    ("a fraction", "a number that shows a part of a whole, such as one half"),
    ("climate", "the usual weather of a place over many years"),
    ("a habit", "something a person does regularly, often without thinking"),
    ("a recipe", "a set of instructions for preparing a dish"),
    ("friction", "the force that slows things down when two surfaces rub together"),
]
DEFINITION_TEMPLATES = ["What is {x}?", "Define {x}.", "What does {x} mean?", "Explain {x} in one sentence.",
                        "what's {x}"]  # fmt: skip

# (subject, two-sentence answer)
ABOUT: list[tuple[str, str]] = [
    (
        "Jupiter",
        "Jupiter is the largest planet in the solar system, a gas giant with a famous storm called the Great Red Spot. "
        "It has dozens of moons.",
    ),
    (
        "Venus",
        "Venus is the second planet from the Sun and the hottest, because its thick clouds trap heat. "
        "It is about the same size as Earth.",
    ),
    (
        "Saturn",
        "Saturn is the sixth planet from the Sun, known for its bright rings of ice and rock. It is a gas giant.",
    ),
    (
        "the Moon",
        "The Moon is Earth's only natural satellite. It takes about 27 days to orbit the Earth and causes the tides.",
    ),
    (
        "elephants",
        "Elephants are the largest land animals. They live in herds, have long trunks and are known for their memory.",
    ),
    (
        "honeybees",
        "Honeybees live in large colonies led by a queen. They pollinate flowers and make honey from nectar.",
    ),
    (
        "the Pacific Ocean",
        "The Pacific is the largest and deepest ocean on Earth. It lies between Asia, Australia and the Americas.",
    ),
    ("Paris", "Paris is the capital of France, on the river Seine. It is known for the Eiffel Tower, art and food."),
    (
        "Tokyo",
        "Tokyo is the capital of Japan and one of the largest cities in the world. "
        "It mixes modern towers with old temples.",
    ),
    ("the piano", "The piano is a keyboard instrument whose keys make small hammers strike strings. It has 88 keys."),
    (
        "chess",
        "Chess is a strategy game for two players on a board of 64 squares. The goal is to checkmate the other king.",
    ),
    (
        "the Great Wall of China",
        "The Great Wall is a series of walls built across northern China over many centuries. "
        "It was built for defence.",
    ),
    ("penguins", "Penguins are birds that cannot fly but swim very well. Most live in the Southern Hemisphere."),
    (
        "the Amazon rainforest",
        "The Amazon is the largest tropical rainforest in the world, mostly in Brazil. "
        "It is home to millions of species.",
    ),
    (
        "the Sun",
        "The Sun is the star at the centre of our solar system. Its light and heat make life on Earth possible.",
    ),
    (
        "William Shakespeare",
        "William Shakespeare was an English playwright and poet. He wrote plays such as Hamlet and Romeo and Juliet.",
    ),
    (
        "Marie Curie",
        "Marie Curie was a scientist who studied radioactivity. She was the first person to win two Nobel Prizes.",
    ),
    (
        "volleyball",
        "Volleyball is a team sport in which two teams hit a ball over a net. "
        "Each team may touch the ball three times.",
    ),
    (
        "coffee",
        "Coffee is a drink made from roasted coffee beans. It contains caffeine, which helps people feel awake.",
    ),
    ("the internet", "The internet is a global network that connects computers. It carries email, websites and video."),
]
ABOUT_TEMPLATES = ["Tell me about {x}.", "What do you know about {x}?", "Give me a short description of {x}.",
                   "tell me something about {x}", "Describe {x} briefly."]  # fmt: skip

# (category, three items)
LISTS: list[tuple[str, list[str]]] = [
    ("primary colors", ["red", "yellow", "blue"]),
    ("fruits", ["apples", "bananas", "oranges"]),
    ("planets", ["Mercury", "Earth", "Neptune"]),
    ("musical instruments", ["the guitar", "the violin", "the drums"]),
    ("farm animals", ["cows", "sheep", "chickens"]),
    ("countries in Europe", ["France", "Germany", "Spain"]),
    ("programming languages", ["Python", "Java", "C"]),
    ("vegetables", ["carrots", "broccoli", "spinach"]),
    ("ways to stay healthy", ["eat well", "exercise", "sleep enough"]),
    ("sports played with a ball", ["football", "tennis", "basketball"]),
    ("things to pack for a beach trip", ["sunscreen", "a towel", "water"]),
    ("ways to reduce waste", ["reuse bags", "recycle", "repair things"]),
    ("continents", ["Africa", "Asia", "Europe"]),
    ("kitchen tools", ["a knife", "a pan", "a spoon"]),
    ("birds", ["the robin", "the eagle", "the owl"]),
]
LIST_TEMPLATES = ["Name three {x}.", "List three {x}.", "Give me three {x}.", "What are three {x}?"]

# (question, answer): yes/no with a reason
YES_NO: list[tuple[str, str]] = [
    ("Is the Sun a star?", "Yes. The Sun is a star: a huge ball of hot gas that makes its own light."),
    ("Can penguins fly?", "No. Penguins cannot fly; their wings are built for swimming."),
    ("Is water wet?", "Yes, in everyday terms: water makes things wet when it touches them."),
    ("Is a tomato a fruit?", "Yes. Botanically a tomato is a fruit, because it holds the plant's seeds."),
    ("Do fish sleep?", "Yes. Fish rest in a sleep-like state, though most do not close their eyes."),
    ("Is the Earth flat?", "No. The Earth is round, as photos from space show."),
    ("Is 9 a prime number?", "No. 9 is not prime, because 3 × 3 = 9."),
    ("Is 13 a prime number?", "Yes. 13 is prime: only 1 and 13 divide it."),
    ("Should I drink water every day?", "Yes. Your body needs water every day to work well."),
    ("Is it safe to look directly at the Sun?", "No. Looking at the Sun can damage your eyes."),
    ("Can a bat see?", "Yes. Bats can see, and many also find their way by echolocation."),
    ("Is ice lighter than water?", "Yes. Ice is less dense than water, which is why it floats."),
    ("Do plants need sunlight?", "Yes. Most plants need sunlight to make food by photosynthesis."),
    ("Is a whale a fish?", "No. A whale is a mammal: it breathes air and feeds its young with milk."),
    ("Is the Moon bigger than the Earth?", "No. The Moon is about a quarter of the Earth's width."),
    ("Can I charge my phone overnight?", "Yes. Modern phones stop charging when the battery is full."),
    ("Is sugar good for my teeth?", "No. Sugar feeds bacteria that cause tooth decay."),
    (
        "Does sound travel in space?",
        "No. Sound needs air or another material to travel through, and space is nearly empty.",
    ),
]

# (instruction, sentence, rewrite)
REWRITES: list[tuple[str, str, str]] = [
    ("Rewrite this more politely", "Give me the report now.", "Could you please send me the report when you can?"),
    ("Rewrite this more politely", "Move your car.", "Would you mind moving your car, please?"),
    ("Rewrite this more politely", "Stop talking.", "Could we have a moment of quiet, please?"),
    ("Rewrite this more politely", "Answer my email.", "I would appreciate a reply to my email when you have time."),
    (
        "Make this sentence shorter",
        "In my opinion, I think that the meeting was very long and it went on for too long.",
        "I think the meeting was too long.",
    ),
    (
        "Make this sentence shorter",
        "Due to the fact that it was raining, we decided that we would stay inside the house.",
        "Because it was raining, we stayed inside.",
    ),
    (
        "Make this sentence shorter",
        "At this point in time we are not able to offer a refund.",
        "We cannot offer a refund now.",
    ),
    ("Fix the grammar", "She don't like apples.", "She doesn't like apples."),
    ("Fix the grammar", "They was at the park yesterday.", "They were at the park yesterday."),
    ("Fix the grammar", "Me and him goes to school.", "He and I go to school."),
    ("Fix the grammar", "I has two cat.", "I have two cats."),
    ("Make this sound more formal", "Hey, can u send the file?", "Hello, could you please send the file?"),
    ("Make this sound more formal", "Thanks a lot, see ya.", "Thank you very much. Best regards."),
    (
        "Make this sound friendlier",
        "Your order is late.",
        "Sorry, your order is running a little late, but it is on its way!",
    ),
]

# (customer message, reply): every reply ends cleanly, as the agent's one message
SERVICE: list[tuple[str, str]] = [
    (
        "My package has not arrived and the tracking has not changed in a week.",
        "I'm sorry your package is late. Please send me your order number and I will check where it is.",
    ),
    (
        "I received the wrong size.",
        "I'm sorry about the mix-up. I can send you the right size today, and you can return the other pair for free.",
    ),
    (
        "The blender I bought stopped working after two days.",
        "I'm sorry to hear that. Your blender is under warranty, so we will replace it at no cost.",
    ),
    (
        "I was charged twice for one order.",
        "I apologize for the double charge. I have refunded the second payment; it will appear in three to five days.",
    ),
    (
        "How do I return an item?",
        "You can start a return from the Orders page. Print the label and drop the parcel at any post office.",
    ),
    (
        "Can I change my delivery address?",
        "Yes. If your order has not shipped, you can change the address on the Orders page.",
    ),
    (
        "My discount code does not work.",
        "Sorry about that. Please tell me the code and I will apply the discount to your order.",
    ),
    (
        "The item arrived damaged.",
        "I'm sorry it arrived damaged. Please send a photo and we will ship a replacement right away.",
    ),
    (
        "When will my refund arrive?",
        "Refunds reach your account within five business days after we receive the return.",
    ),
    (
        "I forgot my password.",
        'No problem. Click "Forgot password" on the sign-in page and we will email you a reset link.',
    ),
]
SERVICE_TEMPLATES = ["A customer writes: \"{x}\" Write a polite reply.", "Reply politely to this customer: {x}",
                     "Customer: {x}\nWrite the agent's reply."]  # fmt: skip

UNITS: list[tuple[str, str, float]] = [("kilometers", "meters", 1000), ("meters", "centimeters", 100),
                                      ("hours", "minutes", 60), ("minutes", "seconds", 60),
                                      ("kilograms", "grams", 1000), ("days", "hours", 24)]  # fmt: skip


def how_to(rng: random.Random, topic: tuple[str, list[str]]) -> tuple[str, str]:
    task, steps = topic
    numbered = "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
    return rng.choice(HOW_TO_TEMPLATES).format(x=task), f"Here is how to {task}:\n{numbered}"


def definition(rng: random.Random, topic: tuple[str, str]) -> tuple[str, str]:
    term, meaning = topic
    answer = f"{term[0].upper()}{term[1:]} is {meaning}."
    return rng.choice(DEFINITION_TEMPLATES).format(x=term), answer


def about(rng: random.Random, topic: tuple[str, str]) -> tuple[str, str]:
    return rng.choice(ABOUT_TEMPLATES).format(x=topic[0]), topic[1]


def listing(rng: random.Random, topic: tuple[str, list[str]]) -> tuple[str, str]:
    category, items = topic
    return rng.choice(LIST_TEMPLATES).format(x=category), f"Three {category}: {items[0]}, {items[1]} and {items[2]}."


def rewrite(rng: random.Random, topic: tuple[str, str, str]) -> tuple[str, str]:
    instruction, sentence, result = topic
    return f"{instruction}: {sentence}", result


def service(rng: random.Random, topic: tuple[str, str]) -> tuple[str, str]:
    return rng.choice(SERVICE_TEMPLATES).format(x=topic[0]), topic[1]


def arithmetic(rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("add", "subtract", "multiply", "convert"))
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if kind == "add":
        question = rng.choice(("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}."))
        return question.format(a=a, b=b), f"{a} + {b} = {a + b}."
    if kind == "subtract":
        a, b = max(a, b), min(a, b)
        question = rng.choice(("What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}."))
        return question.format(a=a, b=b), f"{a} - {b} = {a - b}."
    if kind == "multiply":
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        question = rng.choice(("What is {a} × {b}?", "What is {a} times {b}?", "Multiply {a} by {b}."))
        return question.format(a=a, b=b), f"{a} × {b} = {a * b}."
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 9)
    return f"How many {small} are in {n} {big}?", f"There are {n * int(factor)} {small} in {n} {big}."


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def split(items: list, rng: random.Random, held: int) -> tuple[list, list]:
    """Hold out whole topics, so the held-out loss measures answering new things, not recall."""
    order = items[:]
    rng.shuffle(order)
    return order[held:], order[:held]


def build(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    train: list[tuple[str, str]] = []
    heldout: list[tuple[str, str]] = []
    makers = [(HOW_TO, how_to, 3, 4), (DEFINITIONS, definition, 3, 4), (ABOUT, about, 3, 4), (LISTS, listing, 2, 3),
              (REWRITES, rewrite, 2, 1), (SERVICE, service, 2, 4)]  # fmt: skip
    for items, make, held, repeats in makers:
        kept, out = split(items, rng, held)
        heldout += [make(rng, topic) for topic in out]
        for topic in kept:
            train += [make(rng, topic) for _ in range(repeats)]
    kept, out = split(YES_NO, rng, 3)
    heldout += out
    train += kept
    train += [arithmetic(rng) for _ in range(60)]
    heldout += [arithmetic(rng) for _ in range(6)]
    train = list(dict.fromkeys(train))  # a template drawn twice for one topic: keep one copy
    seen = set(train)
    heldout = [pair for pair in dict.fromkeys(heldout) if pair not in seen]
    rng.shuffle(train)
    return [chat(*pair) for pair in train], [chat(*pair) for pair in heldout]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write to a temporary name and rename: a failed run leaves the old file, never half a new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    temporary.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data", help="directory to write into (default data/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, heldout = build()
    write_jsonl(args.out / TRAIN_FILE, train)
    write_jsonl(args.out / HELDOUT_FILE, heldout)
    print(f"wrote {len(train)} examples to {args.out / TRAIN_FILE} and {len(heldout)} to {args.out / HELDOUT_FILE}")


if __name__ == "__main__":
    main()
