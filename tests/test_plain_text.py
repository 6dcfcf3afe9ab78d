"""A model without a chat template (a base model): the documented plain-text rule (hvd/plain_text.py)."""
from hvd import plain_text


def test_messages_become_a_transcript_ending_where_the_assistant_speaks():
    messages = [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "tool", "content": "42"},
                {"role": "user", "content": " and now?"}]
    assert plain_text.render(messages) == "Be brief.\n\nUser: hi\n\nAssistant: hello\n\nTool: 42\n\nUser: and now?\n\nAssistant:"


def test_engine_sends_a_bare_prompt_as_itself_and_messages_as_the_transcript(tiny_engine):
    tok = tiny_engine.tokenizer
    assert tiny_engine.template == plain_text.TEMPLATE_NAME  # the character tokenizer has no template
    assert tiny_engine.encode("abc") == tok.encode("abc")
    messages = [{"role": "user", "content": "abc"}]
    assert tiny_engine.encode(messages) == tok.encode(plain_text.render(messages))
