"""Recipe table: name -> typed config class and entry point. Each recipe is one readable script in this package."""
from ..config import register_recipe

register_recipe("llm_finetune", "zeropoint.recipes.llm_finetune:LLMFinetuneConfig", "zeropoint.recipes.llm_finetune:run")
register_recipe("vit_classify", "zeropoint.recipes.vit_classify:ViTClassifyConfig", "zeropoint.recipes.vit_classify:run")
register_recipe("clip_contrastive", "zeropoint.recipes.clip_contrastive:CLIPContrastiveConfig",
                "zeropoint.recipes.clip_contrastive:run")
