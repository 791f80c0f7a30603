"""Recipe table: name -> typed config class and entry point. Each recipe is one readable script in this package."""
from ..config import register_recipe

# register_recipe("llm_finetune", "zeropoint.recipes.llm_finetune:LLMFinetuneConfig", "zeropoint.recipes.llm_finetune:run")
