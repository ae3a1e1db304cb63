"""The "unknown name" messages: a guess when one is close, a short list otherwise, always one line."""
from ddsweep.axes import RESULT_COLUMNS
from ddsweep.suggest import close_matches, known_list, unknown


def test_spelling_neighbours_and_initials_are_guessed():
    assert close_matches("widht", ["width", "depth", "seed"]) == ["width"]
    assert close_matches("learning_rate", ["lr", "width"]) == ["lr"]
    assert close_matches("test_eror", RESULT_COLUMNS)[0] == "test_error"


def test_without_a_guess_the_known_names_are_listed():
    assert unknown("dataset", "imagenet", ["cifar10", "mnist1d"]) == "unknown dataset (known: cifar10, mnist1d)"


def test_a_long_list_is_cut_so_the_line_stays_short():
    names = [f"column_number_{i}" for i in range(60)]
    text = known_list(names)
    assert len(text) < 200 and text.endswith("more") and "column_number_0" in text
    shown = text.count("column_number_")
    assert text.endswith(f"and {60 - shown} more")
