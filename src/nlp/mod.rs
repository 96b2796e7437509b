//! Natural-language understanding: the sentence encoder, the business's intents, and the intent
//! classifier trained on them, conversation frustration, and the keyword (sparse) encoder
//! shared by retrieval and frustration.
pub mod classifier;
pub mod encoder;
pub mod frustration;
pub mod intent_model;
pub mod intents;
pub mod intents_check;
pub mod keywords;
pub mod spelling;
