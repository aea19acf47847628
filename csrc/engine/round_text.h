// A round record (swamp/round_record.h) in a checkpoint: text, one line a field. Internal.
#pragma once

#include <string>

#include "swamp/round_record.h"

namespace swamp::engine {

// A round's figures as text and back (exact: doubles with 17 significant digits), ending in a
// check line (a hash of the text before it). decode_round throws c10::Error saying what is wrong
// for text it did not write: a failed check, an unknown or repeated field, a malformed number.
std::string encode_round(const RoundResult& r);
RoundResult decode_round(const std::string& s);

}  // namespace swamp::engine
