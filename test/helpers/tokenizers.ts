/** Tokenizer files for tests: a SentencePiece model and tokenizer.json vocabularies of a chosen size. */

/** A SentencePiece ModelProto with `n` pieces (field 1) and a trainer spec (field 2), as protobuf bytes. */
export function sentencePieceModel(n: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const piece = Buffer.from(`▁p${i}`);
    // SentencePiece { piece = 1 (string); score = 2 (float) }
    const body = Buffer.concat([
      Buffer.from([0x0a, piece.length]),
      piece,
      Buffer.from([0x15, 0, 0, 0x80, 0xbf]),
    ]);
    parts.push(Buffer.from([0x0a, body.length]), body);
  }
  const trainer = Buffer.from([0x10, 0x96, 0x01]); // TrainerSpec { vocab_size(3) … }: a varint field
  parts.push(Buffer.from([0x12, trainer.length]), trainer);
  return Buffer.concat(parts);
}

/** A tokenizer.json of `n` tokens `${prefix}0` … (WordLevel), plus added tokens. */
export function tokenizerJson(
  n: number,
  prefix = 't',
  added: { id: number; content: string }[] = [],
): string {
  return JSON.stringify({
    added_tokens: added,
    model: {
      type: 'WordLevel',
      vocab: Object.fromEntries(Array.from({ length: n }, (_, i) => [`${prefix}${i}`, i])),
      unk_token: `${prefix}0`,
    },
  });
}
