"""parse.py: model responses -> turns, rejections and validation flags (pure functions)."""

from __future__ import annotations

import json

import pytest

from instructgen.curate.parse import (
    Rejection,
    Turn,
    answer_flags,
    find_system_echo,
    parse_response,
    present_categories,
    system_fragments,
)

PLAIN_CONVERSATION = """Question: What is the man holding?
Answer: He is holding the string of a red kite.
Question: Where is he standing?
Answer: On a sandy beach.

The sea is calm behind him.
"""

BOLD_NUMBERED = """Here is a conversation about the photo:

**Question 1:** What animal is on the couch?
**Answer 1:** A brown dog is curled up on the couch.

**Question 2:** Is the dog asleep?
**Answer 2:** Yes, its eyes are closed and it lies still.

---

I hope this helps! Let me know if you need more questions.
"""

Q_A_SHORT_LABELS = """Q1. How many giraffes are there?
A1. There are two giraffes standing near the fence.
Q2. What are they doing?
A2. Both are eating leaves from a tall tree.
"""

Q_COLON = """Q: What color is the bus?
A:   The bus is   red with a white stripe.
Q: Is it moving?
A: No, it is parked at a stop while people board.
"""

NUMBERED_ONLY = """1. What sport is being played?
Tennis. A woman is about to hit the ball.

2. What is she wearing?
A white dress and a visor.
"""

NUMBERED_LABELS = """1. Question: What is on the plate?
   Answer: A slice of pizza and a small salad.
2. Question: Is there a drink?
   Answer: Yes, a glass of water is next to the plate.
"""

UNLABELLED_ANSWERS = """Question: What is the cat doing?
It is sleeping on a laptop keyboard.
Question: Where is the laptop?
On a wooden desk by the window.
"""

ROLE_LABELS = """User: What is in the sky?
Assistant: Several kites are flying above the park.
"""


@pytest.mark.parametrize(
    "text, questions",
    [
        (PLAIN_CONVERSATION, ["What is the man holding?", "Where is he standing?"]),
        (BOLD_NUMBERED, ["What animal is on the couch?", "Is the dog asleep?"]),
        (Q_A_SHORT_LABELS, ["How many giraffes are there?", "What are they doing?"]),
        (Q_COLON, ["What color is the bus?", "Is it moving?"]),
        (NUMBERED_ONLY, ["What sport is being played?", "What is she wearing?"]),
        (NUMBERED_LABELS, ["What is on the plate?", "Is there a drink?"]),
        (UNLABELLED_ANSWERS, ["What is the cat doing?", "Where is the laptop?"]),
        (ROLE_LABELS, ["What is in the sky?"]),
    ],
    ids=[
        "plain",
        "bold-numbered",
        "q1-a1",
        "q-colon",
        "numbered",
        "numbered-labels",
        "unlabelled-answers",
        "user-assistant",
    ],
)
def test_conversation_styles_split_into_question_answer_turns(text, questions):
    turns = parse_response("conversation", text)
    assert [t.question for t in turns] == questions
    assert all(t.answer and "Answer" not in t.answer for t in turns)


def test_conversation_answer_keeps_its_paragraphs():
    turns = parse_response("conversation", PLAIN_CONVERSATION)
    assert turns[1].answer == "On a sandy beach.\n\nThe sea is calm behind him."


def test_conversation_drops_preamble_rule_and_closing_remark():
    turns = parse_response("conversation", BOLD_NUMBERED)
    assert turns[-1].answer == "Yes, its eyes are closed and it lies still."


def test_extra_whitespace_and_markdown_bold_are_cleaned():
    turns = parse_response("conversation", Q_COLON)
    assert turns[0].answer == "The bus is red with a white stripe."
    bold = parse_response("conversation", "Question: Is it **big**?\nAnswer: It is **very** big.")
    assert bold == (Turn("Is it big?", "It is very big."),)


def test_image_token_written_by_the_model_is_removed():
    turns = parse_response(
        "conversation", "Question: <image> What is this?\nAnswer: A cat <image>."
    )
    assert turns == (Turn("What is this?", "A cat ."),)


@pytest.mark.parametrize(
    "text, detail",
    [
        (
            "Question: What?\nAnswer: A dog.\nQuestion: Why?\nQuestion: How?\nAnswer: Fast.",
            "question 2 has no answer",
        ),
        (
            "Question: What is it?\nAnswer: A dog.\nQuestion: Why is it here?",
            "question 2 has no answer",
        ),
        (
            "Answer: A dog on the grass.\nQuestion: What is it?",
            "an answer comes before any question",
        ),
        ("Question: What?\nAnswer: A dog.\nAnswer: A cat.", "question 1 has two answers"),
        ("Question: \nAnswer: A dog.", "question 1 is empty"),
        (
            "Question: What is it?\nAnswer:\n\nQuestion: Why?\nAnswer: Fun.",
            "question 1 has an empty answer",
        ),
    ],
)
def test_conversation_that_would_poison_training_is_unparseable(text, detail):
    assert parse_response("conversation", text) == Rejection("unparseable", detail)


def test_long_text_before_the_first_question_is_unparseable():
    preamble = "This picture is interesting for many reasons. " * 8
    rejected = parse_response("conversation", preamble + "\nQuestion: What?\nAnswer: A dog.")
    assert rejected.reason == "unparseable"


def test_conversation_without_any_question_has_no_turns():
    rejected = parse_response("conversation", "The image shows a dog running on a beach.")
    assert rejected.reason == "no_turns"


def test_complex_reasoning_is_one_turn_with_a_multi_paragraph_answer():
    text = "**Question:** Why is he wearing a helmet?\n\n**Answer:** For safety.\n\nHe rides fast."
    assert parse_response("complex_reasoning", text) == (
        Turn("Why is he wearing a helmet?", "For safety.\n\nHe rides fast."),
    )


def test_complex_reasoning_accepts_an_unlabelled_first_line_question():
    text = "Why might the road be closed?\n\nA fallen tree blocks both lanes."
    assert parse_response("complex_reasoning", text) == (
        Turn("Why might the road be closed?", "A fallen tree blocks both lanes."),
    )


def test_complex_reasoning_with_two_questions_is_unparseable():
    text = "Question: Why?\nAnswer: Because.\nQuestion: How?\nAnswer: Like this."
    assert parse_response("complex_reasoning", text) == Rejection(
        "unparseable", "expected one question, found 2"
    )


def test_detail_is_the_description_without_heading_or_label():
    text = (
        "## Detailed description\n\nDescription: A kitchen  with a stove.\n\nA table stands by it."
    )
    assert parse_response("detail", text) == (
        Turn("", "A kitchen with a stove.\n\nA table stands by it."),
    )


def test_detail_with_a_question_line_is_unparseable():
    rejected = parse_response("detail", "Question: What is shown?\nAnswer: A kitchen.")
    assert rejected.reason == "unparseable"


@pytest.mark.parametrize("task", ["conversation", "detail", "complex_reasoning"])
def test_blank_response_is_empty(task):
    assert parse_response(task, "  \n\t ").reason == "empty"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't assist with that.",
        "As an AI language model, I cannot see images.",
        "I apologize, but I am unable to view the image.",
    ],
)
def test_whole_response_refusal_is_rejected(text):
    assert parse_response("detail", text).reason == "refusal"


def test_every_answer_a_refusal_is_rejected():
    text = "Question: What is in the box?\nAnswer: I'm sorry, I cannot tell what is in the box."
    assert parse_response("complex_reasoning", "Preamble.\n" + text).reason == "refusal"


SYSTEM = (
    "You are a visual assistant that writes questions about one photograph for a dataset.\n"
    "Never mention the coordinates of the objects you were given in the list."
)


def test_system_prompt_sentences_become_echo_fragments():
    assert system_fragments(SYSTEM) == (
        "you are a visual assistant that writes questions about one",
        "never mention the coordinates of the objects you were given",
    )


def test_response_repeating_the_system_prompt_is_a_system_echo():
    text = (
        "Never mention the  coordinates of the objects you were given.\nQuestion: A?\nAnswer: B c."
    )
    rejected = parse_response("conversation", text, system_fragments(SYSTEM))
    assert rejected.reason == "system_echo"


def test_answer_sharing_only_a_few_words_with_the_system_prompt_is_no_echo():
    text = "You are looking at a visual scene of one photograph with a dog."
    assert find_system_echo(text, system_fragments(SYSTEM)) is None


PRESENT = present_categories(("A man walks a dog on the beach.",), {"person", "dog", "kite"})


def flags_of(task: str, *answers: str) -> list[str]:
    return answer_flags(task, tuple(Turn("Q?", a) for a in answers), PRESENT)


def test_captions_and_boxes_make_categories_present_with_synonyms():
    assert {"person", "dog", "kite"} <= PRESENT
    assert flags_of("conversation", "Two women and several puppies play with kites.") == []


def test_answer_naming_an_absent_category_is_flagged():
    flags = flags_of("conversation", "A man is riding a bicycle next to two parked cars.")
    assert flags == ["unseen_category:bicycle", "unseen_category:car"]


def test_multi_word_categories_are_recognised():
    assert flags_of("conversation", "A fire hydrant stands near the man.") == [
        "unseen_category:fire hydrant"
    ]


def test_negated_mention_is_not_flagged():
    assert flags_of("conversation", "There are no cars and no other animals nearby.") == []


@pytest.mark.parametrize(
    "answer",
    [
        "The dog is at [0.12, 0.30, 0.55, 0.98] in the frame.",
        "Its coordinates place it on the left side of the beach.",
        "The bounding box of the dog covers the lower half.",
    ],
)
def test_coordinates_in_answer_are_flagged(answer):
    assert flags_of("conversation", answer) == ["coordinates_in_answer"]


def test_short_and_long_answers_are_flagged_by_task_thresholds():
    assert flags_of("conversation", "Yes.", "The man walks the dog along the water.") == [
        "short_answer"
    ]
    assert flags_of("detail", "A man walks a dog on the beach.") == ["short_answer"]
    assert flags_of("detail", "word " * 351) == ["long_answer"]


def test_refusal_phrase_inside_a_usable_answer_is_flagged():
    answer = "A man walks a dog on a wide beach at dawn. I cannot tell the breed of the dog."
    assert flags_of("conversation", answer) == ["refusal"]


def test_real_gpt4_answers_parse_in_our_formats(test_data):
    """The 90 real GPT-4 samples, written in the formats our prompts ask for, all parse."""
    path = test_data / "llava" / "coco2014_val_gpt4_qa_30x3.jsonl"
    tasks = {"conv": "conversation", "detail": "detail", "complex": "complex_reasoning"}
    for line in path.read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        task = tasks[sample["type"]]
        text = sample["output"]
        if task != "detail":
            text = f"Question: {sample['instruction']}\nAnswer: {text}"
        turns = parse_response(task, text)
        assert isinstance(turns, tuple), (sample["id"], task, turns)
        assert turns[0].answer == " ".join(sample["output"].split()) or "\n\n" in turns[0].answer
