"""Spam/phishing filter: TF-IDF word and bigram features into a logistic regression, served from skops.

The corpus is generated from message templates with a seeded RNG. Both classes share much of their
vocabulary (orders, invoices, accounts, links, "free"), so the model has to weigh many words together.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import skops.io as sio
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from inferd.examples.build import Example

NAME = "spam"
DESCRIPTION = "spam/phishing filter: text in, label (ham/spam) and probabilities out"
TRAIN_SIZE = 600
SEED = 7
SPAM_SHARE = 0.45

HAM = (
    "can we move the {meeting} to {day} at {time}?",
    "notes from the {meeting}: {task} is done, {name} owns {task2} by {day}.",
    "reminder: {meeting} {day} at {time} in room {room}. Agenda: {task}.",
    "please review the {doc} before {day}, I left comments on {task}.",
    "the {doc} is in the shared drive: https://drive.{company}.com/{slug}",
    "are you free for lunch {day}? {name} is coming too.",
    "mum says dinner is at {time} {day}, can you bring {food}?",
    "{kid} has {event} {day}, can you pick them up at {time}?",
    "landed safely, love you all. Call you {day}!",
    "don't forget grandma's birthday {day}, I ordered {food} for the party.",
    "your {shop} order #{order} has shipped and should arrive {day}. Track it in your {shop} account.",
    "{shop}: your parcel was delivered to your {place} at {time}.",
    "your {shop} invoice for order #{order} ({amount}) is now available in your account.",
    "thanks for your payment of {amount} to {shop}, your receipt is attached.",
    "can you send me the {doc} when you have a minute? No rush, {day} is fine.",
    "I won't make the {meeting} {day}, {name} will take notes.",
)
SPAM = (
    "congratulations! you have WON a {prize}! claim it now at {bad_url} before {deadline}.",
    "URGENT: your {bank} account has been suspended. Verify your identity at {bad_url} within {hours} hours.",
    "unusual sign-in detected on your {bank} account. Confirm your password here: {bad_url}",
    "invest {amount} in {coin} today and earn {pct}% guaranteed returns! Join now: {bad_url}",
    "{coin} is about to explode, double your money in {hours} hours. Limited spots: {bad_url}",
    "invoice #{order} is overdue: pay {amount} immediately to avoid legal action. Download it: {bad_url}",
    "your {shop} parcel could not be delivered. Pay the {fee} redelivery fee at {bad_url}",
    "you have been selected for a FREE {prize}. Reply YES or click {bad_url}",
    "final notice: your payment of {amount} failed. Update your card at {bad_url} or your account will be closed.",
    "your {bank} security code expired, log in at {bad_url} to keep your account active.",
    "you are owed a tax refund of {amount}. Submit your bank details at {bad_url} by {deadline}.",
)
SLOTS: dict[str, tuple[str, ...]] = {
    "meeting": ("standup", "sprint review", "1:1", "budget meeting", "design sync", "retro", "planning call"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "tomorrow", "next week", "Saturday"),
    "time": ("9:00", "10:30", "noon", "2pm", "3:15", "5pm", "7pm", "half past six"),
    "task": ("the onboarding doc", "the Q3 forecast", "the API migration", "the test plan", "hiring", "the demo"),
    "task2": ("the release notes", "vendor contracts", "the roadmap", "the bug backlog", "the offsite"),
    "name": ("Anna", "Ben", "Chen", "Dana", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas"),
    "room": ("4B", "12", "Atlas", "Orion", "the kitchen"),
    "doc": ("slides", "contract draft", "quarterly report", "spec", "budget sheet", "minutes"),
    "company": ("acme", "northwind", "initech", "globex"),
    "slug": ("q3-plan", "team-notes", "spec-v2", "offsite-2024", "budget"),
    "food": ("a salad", "dessert", "bread", "the cake", "drinks", "lasagna"),
    "kid": ("Mia", "Leo", "Sam", "Nora"),
    "event": ("football practice", "a piano lesson", "a school play", "swimming", "a dentist appointment"),
    "shop": ("Amazon", "IKEA", "Zalando", "Decathlon", "Etsy", "Apple Store", "Bol.com"),
    "order": ("40213", "77810", "118-2291", "A5531", "90017", "31337-B"),
    "place": ("front door", "mailbox", "neighbour", "parcel locker", "reception"),
    "amount": ("$49.99", "EUR 120", "$1,250", "$250", "GBP 89.00", "$3,000", "EUR 19.90"),
    "prize": ("iPhone 15", "$1,000 gift card", "cruise to the Bahamas", "new MacBook", "cash prize of $5,000"),
    "deadline": ("midnight", "today", "the end of the day", "Friday", "it expires"),
    "bank": ("PayPal", "Chase", "Wells Fargo", "Barclays", "Netflix", "Apple ID", "Microsoft"),
    "hours": ("12", "24", "48", "2"),
    "coin": ("Bitcoin", "a new crypto token", "DogeMax", "ETH", "our AI trading bot"),
    "pct": ("200", "300", "45", "1000"),
    "fee": ("$1.99", "EUR 2.50", "$3", "GBP 1.45"),
}
BAD_DOMAINS = (
    "secure-{word}-login.xyz", "{word}-verify.top", "claim-{word}.win", "bit.ly/{token}", "{word}-support.info",
    "tinyurl.com/{token}", "{word}.account-check.ru", "free-{word}-now.click",
)
BAD_WORDS = ("paypal", "bank", "account", "prize", "refund", "parcel", "crypto", "apple", "wallet", "reward")
HAM_OPENERS = ("", "Hi, ", "Hey, ", "Hello {name}, ", "Hi all, ", "FYI ")
HAM_CLOSERS = ("", " Thanks!", " Cheers, {name}", " See you then.", " x", " Best, {name}")
SPAM_OPENERS = ("", "ATTENTION! ", "Dear customer, ", "Dear {name}, ", "Final warning! ", "Hello, ")
SPAM_CLOSERS = ("", " Act now!", " Don't miss out!", " Reply STOP to opt out.", " Customer Service Team")

_SLOT = re.compile(r"\{(\w+)\}")


def make_messages(n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` generated messages and their labels ("ham"/"spam"), the same for the same seed."""
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[str] = []
    for _ in range(n):
        label = "spam" if rng.random() < SPAM_SHARE else "ham"
        texts.append(_message(label, rng))
        labels.append(label)
    return texts, labels


def _message(label: str, rng: random.Random) -> str:
    if label == "spam":
        text = _fill(rng.choice(SPAM_OPENERS) + rng.choice(SPAM) + rng.choice(SPAM_CLOSERS), rng)
        if rng.random() < 0.15:
            text = text.upper()
    else:
        text = _fill(rng.choice(HAM_OPENERS) + rng.choice(HAM) + rng.choice(HAM_CLOSERS), rng)
    return text[0].upper() + text[1:]


def _fill(template: str, rng: random.Random) -> str:
    def pick(match: re.Match[str]) -> str:
        slot = match.group(1)
        if slot == "bad_url":
            return _bad_url(rng)
        return rng.choice(SLOTS[slot])

    return _SLOT.sub(pick, template)


def _bad_url(rng: random.Random) -> str:
    token = "".join(rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(6))
    domain = rng.choice(BAD_DOMAINS).format(word=rng.choice(BAD_WORDS), token=token)
    path = rng.choice(("", "/login", "/verify", "/claim", f"/?id={token}"))
    return rng.choice(("http://", "https://", "")) + domain + path


def train(texts: list[str], labels: list[str]) -> Pipeline:
    model = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
        ("classifier", LogisticRegression(C=10.0, max_iter=1000)),
    ])
    return model.fit(texts, labels)


def build(model_folder: Path) -> Example:
    model = train(*make_messages(TRAIN_SIZE, SEED))
    artifact = model_folder / "1" / "model.skops"
    sio.dump(model, artifact)
    # inferd refuses skops types outside skops' default trust list. This pipeline has none today (so no
    # model.toml); should a new scikit-learn or skops change that, fail here rather than ship a model that
    # does not load.
    untrusted = sio.get_untrusted_types(file=artifact)
    if untrusted:
        raise RuntimeError(f"{artifact}: skops does not trust {untrusted}; add them to [options] trusted_types")
    request: dict[str, list[Any]] = {"text": [
        "Your PayPal account is on hold! Confirm your details within 24 hours at "
        "http://paypal-secure-check.xyz/login or it will be closed."
    ]}
    return Example(NAME, DESCRIPTION, request, explain)


def explain(outputs: dict[str, np.ndarray]) -> str:
    """'spam (p=0.97)' for each message, separated by semicolons."""
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in outputs["label"].ravel()]
    probabilities = np.asarray(outputs["probabilities"]).reshape(len(labels), -1)
    return "; ".join(f"{label} (p={row.max():.2f})" for label, row in zip(labels, probabilities, strict=True))
