-- What the queue shows for a waiting conversation, written when it joins the queue so listing the
-- queue is one query: the intent the bot read and the customer's message that caused the handoff.
ALTER TABLE conversations ADD COLUMN handoff_intent TEXT;
ALTER TABLE conversations ADD COLUMN handoff_preview TEXT;
