// Loads an `smolconv export-onnx` folder with transformers.js in Node, as a user would, and answers one prompt
// greedily. Local files only. Prints one JSON line (the last line of stdout); tests/test_transformers_js.py runs it.
//
//   node smolvlm.mjs FOLDER --dtype fp32|q4 --prompt "What is the capital of France?" [--max-new-tokens 24]
//   node smolvlm.mjs FOLDER --dtype q4 --image photo.png --prompt "Describe this image." [--max-new-tokens 8]
//
// Without --image the prompt is text only and goes through processor.tokenizer (transformers.js's
// Idefics3Processor needs an image); with --image it goes through the processor.
import path from 'node:path';
import { parseArgs } from 'node:util';

import { AutoModelForVision2Seq, AutoProcessor, env, load_image } from '@huggingface/transformers';

const { values: args, positionals } = parseArgs({
    allowPositionals: true,
    options: {
        dtype: { type: 'string', default: 'fp32' },
        prompt: { type: 'string', default: 'What is the capital of France?' },
        image: { type: 'string' },
        'max-new-tokens': { type: 'string', default: '24' },
    },
});
if (positionals.length !== 1) {
    console.error('usage: node smolvlm.mjs FOLDER [--dtype fp32|q4] [--image PNG] [--prompt TEXT] [--max-new-tokens N]');
    process.exit(2);
}
const folder = path.resolve(positionals[0]);

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(folder) + path.sep;
const modelId = path.basename(folder);

const started = performance.now();
const processor = await AutoProcessor.from_pretrained(modelId);
// One dtype for the three graphs: onnx/{vision_encoder,embed_tokens,decoder_model_merged}{,_q4}.onnx
const model = await AutoModelForVision2Seq.from_pretrained(modelId, { dtype: args.dtype, device: 'cpu' });
const loadSeconds = (performance.now() - started) / 1000;

const content = [{ type: 'text', text: args.prompt }];
let inputs;
if (args.image) {
    const image = await load_image(path.resolve(args.image));
    const text = processor.apply_chat_template([{ role: 'user', content: [{ type: 'image' }, ...content] }], {
        add_generation_prompt: true,
    });
    inputs = await processor(text, [image]);
} else {
    // processor.apply_chat_template hands the conversation to processor.tokenizer
    inputs = processor.apply_chat_template([{ role: 'user', content }], {
        add_generation_prompt: true,
        tokenize: true,
        return_dict: true,
    });
}
const inputIds = Array.from(inputs.input_ids.data, Number);

const t0 = performance.now();
const output = await model.generate({
    ...inputs,
    max_new_tokens: Number(args['max-new-tokens']),
    do_sample: false,
});
const generateSeconds = (performance.now() - t0) / 1000;
const newTokens = Array.from(output.slice(null, [inputIds.length, null]).data, Number);

console.log(
    JSON.stringify({
        transformers_js: env.version,
        node: process.version,
        processor: processor.constructor.name,
        model: model.constructor.name,
        dtype: args.dtype,
        image: args.image ?? null,
        input_ids: inputIds,
        input_tokens: inputIds.length,
        pixel_values: inputs.pixel_values ? inputs.pixel_values.dims : null,
        tokens: newTokens,
        text: processor.tokenizer.decode(newTokens, { skip_special_tokens: true }),
        load_s: loadSeconds,
        generate_s: generateSeconds,
    }),
);
